#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_dev.h>
#include <rte_bus.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_lcore.h>

uint16_t weir_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t weir_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
void *weir_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t weir_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t weir_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t weir_pktmbuf_nb_segs(const struct rte_mbuf *m);
void weir_pktmbuf_free(struct rte_mbuf *m);
void weir_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int count);
struct rte_mbuf *weir_pktmbuf_alloc(struct rte_mempool *mp);
int weir_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count);
char *weir_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int weir_errno(void);
