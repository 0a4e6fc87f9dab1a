//! What every header view shares: the view type and its constructors
//! (`header_view!`), fixed-offset field accessors (`fields!`) and the
//! big-endian encodings they use ([`Field`]).
//!
//! Layer: wire (lowest). No I/O or allocation. On the packet path: the
//! accessors compile to the same loads and stores as hand-written ones.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ids::MacAddr;

/// A header field with a fixed wire encoding (network byte order), read and
/// written at a byte offset.
///
/// Reads and writes panic if the field does not lie inside `buf`; views call
/// them only at offsets their `new_checked` has validated.
pub(crate) trait Field: Sized {
    /// Reads the field starting at `off`.
    fn read(buf: &[u8], off: usize) -> Self;
    /// Writes the field starting at `off`.
    fn write(self, buf: &mut [u8], off: usize);
}

impl Field for u8 {
    #[inline]
    fn read(buf: &[u8], off: usize) -> Self {
        buf[off]
    }

    #[inline]
    fn write(self, buf: &mut [u8], off: usize) {
        buf[off] = self;
    }
}

impl Field for u16 {
    #[inline]
    fn read(buf: &[u8], off: usize) -> Self {
        super::get_u16(buf, off)
    }

    #[inline]
    fn write(self, buf: &mut [u8], off: usize) {
        super::put_u16(buf, off, self);
    }
}

impl Field for MacAddr {
    #[inline]
    fn read(buf: &[u8], off: usize) -> Self {
        let mut m = [0u8; 6];
        m.copy_from_slice(&buf[off..off + 6]);
        MacAddr(m)
    }

    #[inline]
    fn write(self, buf: &mut [u8], off: usize) {
        buf[off..off + 6].copy_from_slice(&self.0);
    }
}

impl Field for Ipv4Addr {
    #[inline]
    fn read(buf: &[u8], off: usize) -> Self {
        Ipv4Addr::new(buf[off], buf[off + 1], buf[off + 2], buf[off + 3])
    }

    #[inline]
    fn write(self, buf: &mut [u8], off: usize) {
        buf[off..off + 4].copy_from_slice(&self.octets());
    }
}

impl Field for Ipv6Addr {
    #[inline]
    fn read(buf: &[u8], off: usize) -> Self {
        let mut a = [0u8; 16];
        a.copy_from_slice(&buf[off..off + 16]);
        Ipv6Addr::from(a)
    }

    #[inline]
    fn write(self, buf: &mut [u8], off: usize) {
        buf[off..off + 16].copy_from_slice(&self.octets());
    }
}

/// Defines a view type `$name<T: AsRef<[u8]>>` over a buffer `buf`, with
/// `new_unchecked`, `new_checked` (which wraps the buffer and then runs the
/// view's own `$check` method) and `into_inner`.
///
/// Each view keeps its own documentation: the type's, then that of
/// `new_unchecked` and of `new_checked`, written before each.
macro_rules! header_view {
    (
        $(#[$doc:meta])*
        pub struct $name:ident;
        $(#[$unchecked_doc:meta])*
        fn new_unchecked;
        $(#[$checked_doc:meta])*
        fn new_checked = $check:ident;
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buf: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            $(#[$unchecked_doc])*
            #[inline]
            pub fn new_unchecked(buf: T) -> Self {
                $name { buf }
            }

            $(#[$checked_doc])*
            #[inline]
            pub fn new_checked(buf: T) -> Result<Self, $crate::wire::WireError> {
                let view = Self::new_unchecked(buf);
                view.$check()?;
                Ok(view)
            }

            /// Returns the underlying buffer.
            #[inline]
            pub fn into_inner(self) -> T {
                self.buf
            }
        }
    };
}

/// Accessors for the fields of a view (made by `header_view!`) that sit at
/// fixed offsets and need no decoding beyond their [`Field`] encoding.
///
/// One line per field: its documentation, the getter's name, optionally a
/// setter's name after a comma, the type and the offset:
///
/// ```text
/// fields! {
///     ArpPacket {
///         /// Hardware type (1 = Ethernet).
///         htype: u16 = field::HTYPE;
///         /// Operation; see [`opcode`].
///         opcode, set_opcode: u16 = field::OPER;
///     }
/// }
/// ```
///
/// Getters need `T: AsRef<[u8]>`, setters also `T: AsMut<[u8]>`.
macro_rules! fields {
    (
        $view:ident {
            $(
                $(#[$doc:meta])*
                $get:ident $(, $set:ident)?: $ty:ty = $off:expr;
            )*
        }
    ) => {
        impl<T: AsRef<[u8]>> $view<T> {
            $(
                $(#[$doc])*
                #[inline]
                pub fn $get(&self) -> $ty {
                    <$ty as $crate::wire::view::Field>::read(self.buf.as_ref(), $off)
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            $($(
                #[doc = concat!(
                    "Writes the field that [`", stringify!($get), "`](Self::",
                    stringify!($get), ") reads."
                )]
                #[inline]
                pub fn $set(&mut self, value: $ty) {
                    <$ty as $crate::wire::view::Field>::write(value, self.buf.as_mut(), $off);
                }
            )?)*
        }
    };
}
