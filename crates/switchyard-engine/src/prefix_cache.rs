//! Prompt-prefix reuse: which sequence slot a new prompt should take so that
//! the longest run of its leading tokens is already in the KV cache.
//!
//! Each slot owns its own slice of the KV cache (the context is created with
//! one stream per sequence). When a generation ends its slot keeps what it
//! evaluated, prompt and answer, and remembers those tokens here. A new
//! request that starts with the same tokens (the same system prompt, the
//! same grounding instructions, the earlier turns of its conversation) takes
//! that slot, drops only the positions past the shared prefix and prefills
//! the rest. The cache therefore costs no memory beyond the KV cache that is
//! allocated anyway (`parallel × context_length` tokens). A prompt that
//! would keep less than half of a slot's cached tokens (say, one that shares
//! only the chat template's first line) goes to the least recently used slot
//! instead, so that a long prefix is not thrown away for a short one.

use llama_cpp_2::token::LlamaToken;

/// Where a new prompt goes and how much of it is already evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The slot (and sequence id) to use.
    pub slot: usize,
    /// Leading prompt tokens whose KV state the slot already holds.
    pub reused: usize,
}

#[derive(Debug, Default)]
struct CachedPrefix {
    tokens: Vec<LlamaToken>,
    last_used: u64,
}

/// What each idle slot holds in the KV cache.
#[derive(Debug)]
pub(crate) struct PrefixCache {
    enabled: bool,
    slots: Vec<CachedPrefix>,
    clock: u64,
}

impl PrefixCache {
    /// A cache for `slots` sequences; when disabled, every placement starts
    /// from an empty sequence.
    pub fn new(slots: usize, enabled: bool) -> Self {
        Self {
            enabled,
            slots: (0..slots).map(|_| CachedPrefix::default()).collect(),
            clock: 0,
        }
    }

    /// Picks a free slot for `prompt`: the one sharing the longest prefix
    /// with it if that keeps at least half of what the slot holds, else the
    /// least recently used. `free` lists the free slots.
    ///
    /// At least the prompt's last token is always left to evaluate, because
    /// sampling needs its logits. The caller must drop the slot's KV state
    /// from position `reused` on, and report back with
    /// [`PrefixCache::store`] when the slot is released.
    pub fn place(&mut self, free: &[usize], prompt: &[LlamaToken]) -> Option<Placement> {
        if !self.enabled {
            return free.first().map(|&slot| Placement { slot, reused: 0 });
        }
        let continued = free
            .iter()
            .map(|&slot| (slot, self.shared_prefix(slot, prompt)))
            .filter(|&(slot, shared)| shared > 0 && shared * 2 >= self.cached_len(slot))
            .max_by_key(|&(slot, shared)| (shared, std::cmp::Reverse(slot)));
        let (slot, shared) = match continued {
            Some(found) => found,
            None => {
                let oldest = free
                    .iter()
                    .copied()
                    .min_by_key(|&slot| self.slots.get(slot).map_or(0, |c| c.last_used))?;
                (oldest, self.shared_prefix(oldest, prompt))
            }
        };
        if let Some(cached) = self.slots.get_mut(slot) {
            // The slot's KV state is about to change; what it holds is
            // known again only when it is released.
            cached.tokens.clear();
        }
        Some(Placement {
            slot,
            reused: shared.min(prompt.len().saturating_sub(1)),
        })
    }

    /// Records what a released slot's sequence holds in the KV cache, in
    /// position order.
    pub fn store(&mut self, slot: usize, tokens: Vec<LlamaToken>) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(cached) = self.slots.get_mut(slot) {
            cached.last_used = clock;
            cached.tokens = tokens;
        }
    }

    /// Forgets a slot whose KV state was cleared or is unknown.
    pub fn forget(&mut self, slot: usize) {
        if let Some(cached) = self.slots.get_mut(slot) {
            cached.tokens.clear();
        }
    }

    /// Whether released slots keep their KV state for later prompts.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn cached_len(&self, slot: usize) -> usize {
        self.slots.get(slot).map_or(0, |cached| cached.tokens.len())
    }

    fn shared_prefix(&self, slot: usize, prompt: &[LlamaToken]) -> usize {
        self.slots.get(slot).map_or(0, |cached| {
            cached
                .tokens
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().copied().map(LlamaToken).collect()
    }

    #[test]
    fn the_slot_with_the_longest_shared_prefix_is_chosen() {
        let mut cache = PrefixCache::new(3, true);
        cache.store(0, tokens(&[1, 2, 9]));
        cache.store(1, tokens(&[1, 2, 3, 4, 8]));
        cache.store(2, tokens(&[7]));
        let placed = cache.place(&[0, 1, 2], &tokens(&[1, 2, 3, 4, 5, 6]));
        assert_eq!(placed, Some(Placement { slot: 1, reused: 4 }));
    }

    #[test]
    fn the_same_prompt_again_leaves_its_last_token_to_evaluate() {
        let mut cache = PrefixCache::new(1, true);
        cache.store(0, tokens(&[1, 2, 3, 10, 11]));
        let placed = cache.place(&[0], &tokens(&[1, 2, 3])).unwrap();
        assert_eq!(placed.reused, 2);
    }

    #[test]
    fn without_a_shared_prefix_the_least_recently_used_slot_is_overwritten() {
        let mut cache = PrefixCache::new(3, true);
        cache.store(1, tokens(&[5, 5]));
        cache.store(0, tokens(&[6, 6]));
        cache.store(2, tokens(&[7, 7]));
        let placed = cache.place(&[0, 1, 2], &tokens(&[1, 2])).unwrap();
        assert_eq!(placed, Placement { slot: 1, reused: 0 });
        // A slot never used is older than any used one.
        let mut fresh = PrefixCache::new(2, true);
        fresh.store(0, tokens(&[5]));
        assert_eq!(fresh.place(&[0, 1], &tokens(&[1])).unwrap().slot, 1);
    }

    #[test]
    fn a_short_shared_header_does_not_overwrite_a_long_cached_prefix() {
        let mut cache = PrefixCache::new(2, true);
        cache.store(0, tokens(&[1, 2, 3, 4, 5, 6, 7, 8]));
        let placed = cache.place(&[0, 1], &tokens(&[1, 2, 9, 9])).unwrap();
        assert_eq!(placed, Placement { slot: 1, reused: 0 });
        // When the least recently used slot is the one sharing the header,
        // the header is still reused.
        let mut one = PrefixCache::new(1, true);
        one.store(0, tokens(&[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(one.place(&[0], &tokens(&[1, 2, 9, 9])).unwrap().reused, 2);
    }

    #[test]
    fn only_free_slots_are_considered_and_a_placed_slot_forgets_its_tokens() {
        let mut cache = PrefixCache::new(2, true);
        cache.store(0, tokens(&[1, 2, 3]));
        let placed = cache.place(&[1], &tokens(&[1, 2, 3, 4])).unwrap();
        assert_eq!(placed, Placement { slot: 1, reused: 0 });
        let first = cache.place(&[0], &tokens(&[1, 2, 3, 4])).unwrap();
        assert_eq!(first.reused, 3);
        // Slot 0 is now in use; until it is stored again it shares nothing.
        assert_eq!(cache.place(&[0], &tokens(&[1, 2, 3, 4])).unwrap().reused, 0);
        assert_eq!(cache.place(&[], &tokens(&[1])), None);
    }

    #[test]
    fn a_disabled_cache_never_reuses() {
        let mut cache = PrefixCache::new(1, false);
        cache.store(0, tokens(&[1, 2, 3]));
        assert_eq!(cache.place(&[0], &tokens(&[1, 2, 3, 4])).unwrap().reused, 0);
        cache.store(0, tokens(&[1, 2, 3]));
        cache.forget(0);
        assert_eq!(cache.place(&[0], &tokens(&[1, 2, 3, 4])).unwrap().reused, 0);
    }
}
