//! Turns the byte pieces of generated tokens into whole UTF-8 text.
//!
//! A byte-level BPE token can end in the middle of a multi-byte character
//! (an emoji is often two or three tokens), so the bytes of a token are not
//! always valid text on their own. Written by hand because it is a dozen
//! lines over `std::str::from_utf8`'s error report, which already says
//! whether a bad tail is incomplete or invalid.

/// Accumulates token bytes and hands out only complete characters.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds the bytes of one token and returns the text that is now complete.
    /// Bytes that can never become valid UTF-8 are replaced by U+FFFD rather
    /// than held forever.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    start = self.pending.len();
                    break;
                }
                Err(error) => {
                    let valid_end = start + error.valid_up_to();
                    // The prefix was just checked, so this cannot fail.
                    text.push_str(&String::from_utf8_lossy(&self.pending[start..valid_end]));
                    match error.error_len() {
                        // An incomplete character at the end: wait for more.
                        None => {
                            start = valid_end;
                            break;
                        }
                        Some(invalid_len) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            start = valid_end + invalid_len;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        text
    }

    /// Ends the text: whatever is still pending can no longer complete.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_tokens_is_emitted_once_whole() {
        let mut assembler = Utf8Assembler::default();
        let euro = "€".as_bytes(); // three bytes
        assert_eq!(assembler.push(b"price: "), "price: ");
        assert_eq!(assembler.push(&euro[..1]), "");
        assert_eq!(assembler.push(&euro[1..2]), "");
        assert_eq!(assembler.push(&euro[2..]), "€");
        assert_eq!(assembler.finish(), "");
    }

    #[test]
    fn a_four_byte_emoji_split_in_two_tokens() {
        let mut assembler = Utf8Assembler::default();
        let emoji = "🙂!".as_bytes();
        assert_eq!(assembler.push(&emoji[..2]), "");
        assert_eq!(assembler.push(&emoji[2..]), "🙂!");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_without_stalling() {
        let mut assembler = Utf8Assembler::default();
        assert_eq!(assembler.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(assembler.push(b"\xe2\x82"), "");
        assert_eq!(assembler.finish(), "\u{fffd}");
    }
}
