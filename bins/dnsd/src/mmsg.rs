//! Batched UDP I/O with `recvmmsg`/`sendmmsg` (Linux), as Knot does: one
//! system call receives up to [`BATCH`] queries and one sends the answers.
//!
//! This is the daemon's only unsafe code: the two calls take raw arrays
//! of `mmsghdr` whose pointers refer to buffers owned by [`Batch`], which
//! stay alive and unmoved (boxed slices, never resized) during each call.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram (queries are small; longer ones are cut
/// and then answered FORMERR or dropped by the responder).
const BUF: usize = 4096;

/// Reusable receive buffers and headers.
pub struct Batch {
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    send_iovs: Box<[libc::iovec]>,
    send_hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside the headers only ever point into the
// batch's own boxed buffers; they are rebuilt before every call.
unsafe impl Send for Batch {}

impl Batch {
    /// Allocates the buffers.
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let (addr, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        Batch {
            bufs: vec![0u8; BATCH * BUF].into_boxed_slice(),
            addrs: vec![addr; BATCH].into_boxed_slice(),
            iovs: vec![iov; BATCH].into_boxed_slice(),
            hdrs: vec![hdr; BATCH].into_boxed_slice(),
            send_iovs: vec![iov; BATCH].into_boxed_slice(),
            send_hdrs: vec![hdr; BATCH].into_boxed_slice(),
        }
    }

    /// Blocks until at least one datagram arrives (or the socket's read
    /// timeout passes); returns how many were received.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            let (Some(iov), Some(hdr), Some(addr)) = (
                self.iovs.get_mut(i),
                self.hdrs.get_mut(i),
                self.addrs.get_mut(i),
            ) else {
                break;
            };
            // SAFETY: i * BUF + BUF <= bufs.len(), so the pointer stays in bounds.
            iov.iov_base = unsafe { base.add(i * BUF) }.cast();
            iov.iov_len = BUF;
            hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov as *mut libc::iovec;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: hdrs holds BATCH initialised headers pointing at live buffers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The `i`-th received datagram and its sender.
    pub fn packet(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let hdr = self.hdrs.get(i)?;
        let len = (hdr.msg_len as usize).min(BUF);
        let data = self.bufs.get(i * BUF..i * BUF + len)?;
        let storage = *self.addrs.get(i)?;
        // SAFETY: the kernel filled `storage` with an address of `msg_namelen` bytes.
        let addr = unsafe { socket2::SockAddr::new(storage, hdr.msg_hdr.msg_namelen) };
        Some((data, addr.as_socket()?))
    }

    /// Sends `outs[i]` back to the sender of datagram `i` for each listed
    /// `i`, in as few system calls as the kernel allows.
    pub fn send(&mut self, fd: RawFd, which: &[usize], outs: &[Vec<u8>]) {
        let mut count = 0usize;
        for &i in which {
            let (Some(out), Some(addr), Some(rhdr)) =
                (outs.get(i), self.addrs.get_mut(i), self.hdrs.get(i))
            else {
                continue;
            };
            let namelen = rhdr.msg_hdr.msg_namelen;
            let (Some(iov), Some(hdr)) =
                (self.send_iovs.get_mut(count), self.send_hdrs.get_mut(count))
            else {
                break;
            };
            iov.iov_base = out.as_ptr() as *mut libc::c_void;
            iov.iov_len = out.len();
            hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = namelen;
            hdr.msg_hdr.msg_iov = iov as *mut libc::iovec;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
            count += 1;
        }
        let mut sent = 0usize;
        while sent < count {
            let Some(rest) = self.send_hdrs.get_mut(sent..count) else {
                break;
            };
            // SAFETY: the first `count` send headers point at live reply
            // buffers (`outs`) and addresses for the duration of the call.
            let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (e.g. an unreachable peer).
                tracing::debug!("udp sendmmsg: {e}");
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
    }
}
