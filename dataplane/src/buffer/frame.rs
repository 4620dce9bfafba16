//! A frame: the vector of up to [`FRAME_SIZE`] buffers that a graph node
//! processes in one call, as in VPP's `vlib_frame_t`.

use super::BufferIndex;

/// Packets per vector.
pub const FRAME_SIZE: usize = 256;

/// An ordered set of owned buffers.
///
/// It stores raw indices but only ever hands out [`BufferIndex`] tokens it
/// was given, so the linear ownership of tokens carries through frames.
#[derive(Debug)]
pub struct Frame {
    len: usize,
    slots: [u32; FRAME_SIZE],
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            len: 0,
            slots: [0; FRAME_SIZE],
        }
    }
}

impl Frame {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == FRAME_SIZE
    }

    /// Room left in the frame.
    #[inline]
    pub fn room(&self) -> usize {
        FRAME_SIZE - self.len
    }

    /// Appends a buffer.
    ///
    /// # Panics
    /// When the frame is full. The graph never overfills a frame: a vector
    /// holds at most `FRAME_SIZE` packets and every node forwards, replaces
    /// or drops each packet one for one.
    #[inline]
    pub fn push(&mut self, b: BufferIndex) {
        assert!(self.len < FRAME_SIZE, "frame overflow");
        self.slots[self.len] = b.0;
        self.len += 1;
    }

    /// Removes and returns the last buffer.
    #[inline]
    pub fn pop(&mut self) -> Option<BufferIndex> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(BufferIndex(self.slots[self.len]))
    }

    /// The raw index at position `i` (for prefetching; grants no access).
    #[inline]
    pub fn peek(&self, i: usize) -> Option<u32> {
        self.slots[..self.len].get(i).copied()
    }

    /// Takes every buffer out, in order.
    #[inline]
    pub fn drain(&mut self) -> Drain<'_> {
        let len = self.len;
        self.len = 0;
        Drain {
            frame: self,
            pos: 0,
            len,
        }
    }
}

/// Iterator returned by [`Frame::drain`]. Buffers it has not yielded when
/// dropped stay in the frame.
#[derive(Debug)]
pub struct Drain<'a> {
    frame: &'a mut Frame,
    pos: usize,
    len: usize,
}

impl Drain<'_> {
    /// The raw index `ahead` positions after the next one (for prefetch).
    #[inline]
    pub fn peek_ahead(&self, ahead: usize) -> Option<u32> {
        let i = self.pos + ahead;
        (i < self.len).then(|| self.frame.slots[i])
    }
}

impl Iterator for Drain<'_> {
    type Item = BufferIndex;

    #[inline]
    fn next(&mut self) -> Option<BufferIndex> {
        if self.pos == self.len {
            return None;
        }
        let b = BufferIndex(self.frame.slots[self.pos]);
        self.pos += 1;
        Some(b)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len - self.pos, Some(self.len - self.pos))
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        // Keep what was not taken, at the front.
        let rest = self.len - self.pos;
        self.frame.slots.copy_within(self.pos..self.len, 0);
        self.frame.len = rest;
    }
}
