//! ELF images as the `object` crate needs them: 8-byte aligned.

use std::borrow::Cow;

/// An ELF image in storage that `object` can parse in place.
pub struct AlignedImage<'a> {
    inner: Cow<'a, [u64]>,
    borrowed: Option<&'a [u8]>,
    len: usize,
}

impl<'a> AlignedImage<'a> {
    /// Borrows `image` when it is 8-byte aligned, copies it otherwise.
    pub fn new(image: &'a [u8]) -> Self {
        if image.as_ptr().align_offset(8) == 0 {
            return Self { inner: Cow::Owned(Vec::new()), borrowed: Some(image), len: image.len() };
        }
        let mut words = vec![0u64; image.len().div_ceil(8)];
        for (w, chunk) in words.iter_mut().zip(image.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        Self { inner: Cow::Owned(words), borrowed: None, len: image.len() }
    }

    /// The image's bytes, 8-byte aligned.
    pub fn bytes(&self) -> &[u8] {
        if let Some(b) = self.borrowed {
            return b;
        }
        // SAFETY: `inner` owns at least `len` initialised bytes (len.div_ceil(8)
        // words); u8 has no alignment or validity requirements.
        unsafe { std::slice::from_raw_parts(self.inner.as_ptr().cast::<u8>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_unaligned_and_borrows_aligned() {
        let words = [0x1122_3344_5566_7788u64, 0x99aa_bbcc_ddee_ff00];
        // SAFETY: viewing two initialised u64s as 16 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 16) };
        let a = AlignedImage::new(bytes);
        assert_eq!(a.bytes().as_ptr(), bytes.as_ptr());
        let un = &bytes[1..];
        let b = AlignedImage::new(un);
        assert_eq!(b.bytes(), un);
        assert_eq!(b.bytes().as_ptr().align_offset(8), 0);
    }
}
