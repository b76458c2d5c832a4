//! Maps Switchyard's sampling parameters onto llama.cpp's sampler chain.

use llama_cpp_2::sampling::LlamaSampler;
use switchyard_core::SamplingParams;

/// OpenAI's default temperature and nucleus mass; used when a request says
/// nothing, so that a client sees the behaviour it would see upstream.
const DEFAULT_TEMPERATURE: f32 = 1.0;
const DEFAULT_TOP_P: f32 = 1.0;

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// Builds the sampler for one sequence. `grammar` constrains the answer's
/// shape; `penalty_window` is how many recent tokens the repetition
/// penalties look at.
pub fn build_sampler(
    params: &SamplingParams,
    grammar: Option<LlamaSampler>,
    n_vocab: i32,
    penalty_window: i32,
) -> LlamaSampler {
    let mut chain = Vec::with_capacity(7);
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
    // Before any truncation: top-k or top-p first could leave only tokens
    // the grammar forbids.
    chain.extend(grammar);

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
