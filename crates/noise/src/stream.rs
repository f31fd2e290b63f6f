//! [`NoiseStream`]: a byte stream over encrypted records, on which the server runs HTTP/2.

use crate::{NoiseError, RecordCodec};
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many buffered ciphertext bytes, writes wait for the socket instead of buffering more.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Decrypts records from `io` on read and encrypts writes into records.
pub struct NoiseStream<IO> {
    io: IO,
    codec: RecordCodec,
    /// Ciphertext read from `io`, not yet decrypted.
    incoming: BytesMut,
    /// Decrypted bytes not yet handed to the reader.
    plaintext: BytesMut,
    /// Ciphertext waiting to be written to `io`.
    outgoing: BytesMut,
    eof: bool,
}

impl<IO> NoiseStream<IO> {
    /// Wraps `io`; `leftover` is ciphertext already read past the handshake (usually empty).
    pub fn new(io: IO, codec: RecordCodec, leftover: BytesMut) -> NoiseStream<IO> {
        NoiseStream { io, codec, incoming: leftover, plaintext: BytesMut::new(), outgoing: BytesMut::new(), eof: false }
    }

    /// Queues `data` for sending; it goes out on the next write or flush. Used for the early payload, which must
    /// precede the first HTTP/2 byte.
    pub fn queue(&mut self, data: &[u8]) -> io::Result<()> {
        self.codec.seal(data, &mut self.outgoing).map_err(to_io)
    }
}

fn to_io(e: NoiseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> NoiseStream<IO> {
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.advance(n);
        }
        if self.outgoing.capacity() > 0 {
            // Released rather than kept for the next write: most connections are idle between small deltas, and
            // even a 4 KiB buffer kept per connection was a fifth of what a connected node cost.
            self.outgoing = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads go through a buffer on the stack and only a partial record is kept between reads, so an idle connection
/// (the usual state of a map stream) holds no read buffer at all.
impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for NoiseStream<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.plaintext.is_empty() {
                let n = this.plaintext.len().min(buf.remaining());
                buf.put_slice(&this.plaintext[..n]);
                this.plaintext.advance(n);
                if this.plaintext.is_empty() {
                    // Release the record's allocation (shared with `incoming`).
                    this.plaintext = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(record) = this.codec.open(&mut this.incoming).map_err(to_io)? {
                this.plaintext = record;
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.incoming.is_empty() {
                // An emptied buffer still pins the allocation the last records were split from.
                this.incoming = BytesMut::new();
            }
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); crate::MAX_RECORD];
            let mut rb = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated Noise record")));
                }
                return Poll::Ready(Ok(()));
            }
            this.incoming.extend_from_slice(rb.filled());
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for NoiseStream<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    /// HTTP/2 writes a frame's header and its payload as separate slices; sealing them together makes one record
    /// and one socket write where each slice would have been its own.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.outgoing.len() >= WRITE_HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        this.codec.seal_parts(bufs, &mut this.outgoing).map_err(to_io)?;
        // Push what we can now; anything left goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
