//! Writes a capture stream ([`crate::Request::Capture`]) as pcapng: one
//! Interface Description Block per captured port, one Enhanced Packet Block
//! per frame, with its direction in the flags and, for a dropped frame, the
//! drop reason as the packet's comment.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use crate::{hex_decode, CaptureChunk};

/// `epb_flags` direction bits (pcapng, section "Enhanced Packet Block
/// Flags Word"): bits 0-1, 01 inbound, 10 outbound.
const FLAG_INBOUND: u32 = 0b01;
const FLAG_OUTBOUND: u32 = 0b10;

/// `if_tsresol` of 9: timestamps in nanoseconds (the writer stores them so).
const TSRESOL_NANOS: u8 = 9;

/// Why a capture could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PcapngError {
    /// The pcapng writer failed (an I/O error of the output, usually).
    #[error("writing pcapng")]
    Write(#[from] pcap_file::PcapError),
    /// The stream is not what the daemon sends.
    #[error("malformed capture stream: {0}")]
    Stream(&'static str),
}

/// Turns capture chunks into a pcapng stream on `W`.
pub struct CaptureWriter<W: Write> {
    out: PcapNgWriter<W>,
    interfaces: usize,
    frames: u64,
    bytes: u64,
}

impl<W: Write> std::fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("interfaces", &self.interfaces)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Writes the section header to `out`.
    ///
    /// # Errors
    /// If `out` fails.
    pub fn new(out: W) -> Result<Self, PcapngError> {
        Ok(CaptureWriter {
            out: PcapNgWriter::new(out)?,
            interfaces: 0,
            frames: 0,
            bytes: 0,
        })
    }

    /// Writes the interfaces and frames of `chunk`.
    ///
    /// # Errors
    /// If the output fails, or a frame names an interface not described
    /// before it or has data that is not hex.
    pub fn write_chunk(&mut self, chunk: &CaptureChunk) -> Result<(), PcapngError> {
        let snaplen = chunk.snaplen.unwrap_or(0);
        for name in &chunk.interfaces {
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(name.clone())),
                    InterfaceDescriptionOption::IfTsResol(TSRESOL_NANOS),
                ],
            };
            self.out.write_pcapng_block(idb)?;
            self.interfaces += 1;
        }
        for f in &chunk.frames {
            if f.interface as usize >= self.interfaces {
                return Err(PcapngError::Stream("frame of an undescribed interface"));
            }
            let data = hex_decode(&f.data).ok_or(PcapngError::Stream("frame data not hex"))?;
            let mut options = vec![EnhancedPacketOption::Flags(match f.direction.as_str() {
                "tx" => FLAG_OUTBOUND,
                _ => FLAG_INBOUND,
            })];
            if let Some(reason) = &f.drop {
                options.push(EnhancedPacketOption::Comment(Cow::Borrowed(reason)));
            }
            let epb = EnhancedPacketBlock {
                interface_id: f.interface,
                timestamp: Duration::from_nanos(f.timestamp_ns),
                original_len: f.orig_len,
                data: Cow::Owned(data),
                options,
            };
            self.out.write_pcapng_block(epb)?;
            self.frames += 1;
            self.bytes += u64::from(f.orig_len);
        }
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Their length on the wire, summed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The output, to flush or close.
    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hex_encode, CapturedFrame};
    use pcap_file::pcapng::{Block, PcapNgReader};

    fn frame(
        interface: u32,
        direction: &str,
        drop: Option<&str>,
        data: &[u8],
        orig_len: u32,
    ) -> CapturedFrame {
        CapturedFrame {
            interface,
            direction: direction.into(),
            drop: drop.map(Into::into),
            timestamp_ns: 1_700_000_000_123_456_789,
            orig_len,
            data: hex_encode(data),
        }
    }

    #[test]
    fn chunks_read_back_as_interfaces_and_packets_with_direction_and_reason() {
        let mut w = CaptureWriter::new(Vec::new()).unwrap();
        let first = CaptureChunk {
            interfaces: vec!["p1".into()],
            snaplen: Some(64),
            ..CaptureChunk::default()
        };
        w.write_chunk(&first).unwrap();
        let frames = CaptureChunk {
            frames: vec![
                frame(0, "rx", None, &[1, 2, 3, 4, 5], 5),
                frame(0, "tx", None, &[9; 64], 1514),
                frame(0, "rx", Some("acl-deny"), &[7; 60], 60),
            ],
            ..CaptureChunk::default()
        };
        w.write_chunk(&frames).unwrap();
        assert_eq!((w.frames(), w.bytes()), (3, 5 + 1514 + 60));
        let bytes = w.into_inner();

        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut got = Vec::new();
        while let Some(block) = r.next_block() {
            match block.unwrap() {
                Block::InterfaceDescription(idb) => {
                    assert_eq!(idb.linktype, DataLink::ETHERNET);
                    assert_eq!(idb.snaplen, 64);
                    assert!(idb
                        .options
                        .contains(&InterfaceDescriptionOption::IfName("p1".into())));
                    assert!(idb
                        .options
                        .contains(&InterfaceDescriptionOption::IfTsResol(9)));
                }
                Block::EnhancedPacket(epb) => got.push(epb.into_owned()),
                other => panic!("unexpected block {other:?}"),
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(&got[0].data[..], &[1, 2, 3, 4, 5]);
        assert_eq!(
            got[0].timestamp,
            Duration::from_nanos(1_700_000_000_123_456_789)
        );
        assert_eq!(got[0].options, [EnhancedPacketOption::Flags(FLAG_INBOUND)]);
        assert_eq!((got[1].data.len(), got[1].original_len), (64, 1514));
        assert_eq!(got[1].options, [EnhancedPacketOption::Flags(FLAG_OUTBOUND)]);
        assert_eq!(
            got[2].options,
            [
                EnhancedPacketOption::Flags(FLAG_INBOUND),
                EnhancedPacketOption::Comment("acl-deny".into())
            ]
        );
    }

    #[test]
    fn a_frame_before_its_interface_or_with_bad_data_is_refused() {
        let mut w = CaptureWriter::new(Vec::new()).unwrap();
        let early = CaptureChunk {
            frames: vec![frame(0, "rx", None, &[1; 20], 20)],
            ..CaptureChunk::default()
        };
        assert!(matches!(w.write_chunk(&early), Err(PcapngError::Stream(_))));
        let mut bad = CaptureChunk {
            interfaces: vec!["p1".into()],
            frames: vec![frame(0, "rx", None, &[1; 20], 20)],
            ..CaptureChunk::default()
        };
        bad.frames[0].data = "zz".into();
        assert!(matches!(w.write_chunk(&bad), Err(PcapngError::Stream(_))));
    }
}
