//! Maps Switchyard's sampling parameters onto llama.cpp's sampler chain.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use switchyard_core::SamplingParams;

/// OpenAI's default temperature and nucleus mass; used when a request says
/// nothing, so that a client sees the behaviour it would see upstream.
const DEFAULT_TEMPERATURE: f32 = 1.0;
const DEFAULT_TOP_P: f32 = 1.0;

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// One sequence's sampler: llama.cpp's chain, and the grammar that keeps
/// the answer's shape, if any.
pub(crate) struct SequenceSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
    /// Ends the answer when the grammar allows no token at all.
    end_of_text: LlamaToken,
    /// The candidates of the last sample, kept to reuse the allocation.
    candidates: Vec<LlamaTokenData>,
}

impl SequenceSampler {
    /// Samples the next token from the logits at batch index `index`.
    ///
    /// With a grammar, the token is first sampled freely and only checked
    /// against the grammar; the grammar is applied to the whole vocabulary
    /// (and the token sampled again) only when it refuses that one. This is
    /// what llama.cpp's own common sampler does: checking every token of a
    /// 50,000-token vocabulary at every step costs more than the forward
    /// pass of a small model, and most steps' first choice is allowed.
    pub fn sample(&mut self, ctx: &LlamaContext<'_>, index: i32) -> LlamaToken {
        let Some(grammar) = self.grammar.as_mut() else {
            return self.chain.sample(ctx, index);
        };
        let logits = ctx.get_logits_ith(index);
        let mut first = candidates_of(&mut self.candidates, logits);
        first.apply_sampler(&mut self.chain);
        let mut token = first.selected_token();
        self.candidates = first.data;
        if let Some(free) = token {
            let mut single =
                LlamaTokenDataArray::new(vec![LlamaTokenData::new(free, 1.0, 0.0)], false);
            single.apply_sampler(grammar);
            if single
                .data
                .first()
                .is_none_or(|d| d.logit() == f32::NEG_INFINITY)
            {
                token = None;
            }
        }
        let token = match token {
            Some(token) => token,
            None => {
                let mut constrained = candidates_of(&mut self.candidates, logits);
                constrained.apply_sampler(grammar);
                constrained.apply_sampler(&mut self.chain);
                let selected = constrained.selected_token();
                self.candidates = constrained.data;
                let Some(token) = selected else {
                    // Nothing selectable: the answer ends. The grammar is
                    // not told (llama.cpp aborts on an end-of-text token
                    // its grammar does not allow).
                    self.chain.accept(self.end_of_text);
                    return self.end_of_text;
                };
                token
            }
        };
        grammar.accept(token);
        self.chain.accept(token);
        token
    }
}

/// Every token with its logit, in `buffer`'s allocation.
fn candidates_of(buffer: &mut Vec<LlamaTokenData>, logits: &[f32]) -> LlamaTokenDataArray {
    let mut data = std::mem::take(buffer);
    data.clear();
    data.extend(logits.iter().enumerate().map(|(id, &logit)| {
        LlamaTokenData::new(
            LlamaToken(i32::try_from(id).unwrap_or(i32::MAX)),
            logit,
            0.0,
        )
    }));
    LlamaTokenDataArray::new(data, false)
}

/// Builds the sampler for one sequence. `grammar` constrains the answer's
/// shape (`end_of_text` ends it when the grammar allows nothing);
/// `penalty_window` is how many recent tokens the repetition penalties
/// look at.
pub(crate) fn build_sampler(
    params: &SamplingParams,
    grammar: Option<LlamaSampler>,
    end_of_text: LlamaToken,
    n_vocab: i32,
    penalty_window: i32,
) -> SequenceSampler {
    SequenceSampler {
        chain: build_chain(params, n_vocab, penalty_window),
        grammar,
        end_of_text,
        candidates: Vec::new(),
    }
}

fn build_chain(params: &SamplingParams, n_vocab: i32, penalty_window: i32) -> LlamaSampler {
    let mut chain = Vec::with_capacity(6);
    let repeat = params.repetition_penalty.unwrap_or(1.0);
    let frequency = params.frequency_penalty.unwrap_or(0.0);
    let presence = params.presence_penalty.unwrap_or(0.0);
    if repeat != 1.0 || frequency != 0.0 || presence != 0.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            penalty_window,
            repeat,
            frequency,
            presence,
        ));
    }

    let temperature = params.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    if let Some(top_k) = params.top_k.filter(|&k| k > 0) {
        chain.push(LlamaSampler::top_k(
            i32::try_from(top_k).unwrap_or(i32::MAX),
        ));
    }
    let top_p = params.top_p.unwrap_or(DEFAULT_TOP_P);
    if top_p < 1.0 {
        chain.push(LlamaSampler::top_p(top_p, 1));
    }
    if let Some(min_p) = params.min_p.filter(|&p| p > 0.0) {
        chain.push(LlamaSampler::min_p(min_p, 1));
    }
    chain.push(LlamaSampler::temp(temperature));
    chain.push(LlamaSampler::dist(
        params.seed.map_or(RANDOM_SEED, fold_seed),
    ));
    LlamaSampler::chain_simple(chain)
}

/// llama.cpp seeds are 32-bit; fold both halves in so that seeds which differ
/// only in their high bits still differ. `u32::MAX` would mean "random", so
/// it is nudged to keep a fixed seed fixed.
fn fold_seed(seed: u64) -> u32 {
    let folded = (seed ^ (seed >> 32)) as u32;
    if folded == RANDOM_SEED {
        folded - 1
    } else {
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_fold_to_distinct_fixed_values() {
        assert_eq!(fold_seed(7), 7);
        assert_ne!(fold_seed(1 << 40), fold_seed(0));
        assert_ne!(fold_seed(u64::from(u32::MAX)), RANDOM_SEED);
    }
}
