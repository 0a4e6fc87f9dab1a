/* Exported wrappers for DPDK's `static inline` fast-path functions, which have
 * no symbol in the shared libraries and so cannot be bound directly. */
#include <rte_ethdev.h>
#include <rte_mbuf.h>

uint16_t weir_rx_burst(uint16_t port_id, uint16_t queue_id,
                       struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t weir_tx_burst(uint16_t port_id, uint16_t queue_id,
                       struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

void *weir_pktmbuf_mtod(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t weir_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint32_t weir_pktmbuf_pkt_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_pkt_len(m);
}

uint16_t weir_pktmbuf_nb_segs(const struct rte_mbuf *m)
{
	return m->nb_segs;
}

void weir_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

void weir_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int count)
{
	rte_pktmbuf_free_bulk(mbufs, count);
}

struct rte_mbuf *weir_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int weir_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                            unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

char *weir_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_append(m, len);
}

int weir_errno(void)
{
	return rte_errno;
}
