//! The engine thread: owns the llama.cpp context and runs every admitted
//! sequence through it.
//!
//! Each loop iteration builds one batch from all active sequences (the next
//! token of each decoding sequence, plus a chunk of a waiting prompt) and runs
//! it with one `decode` call, so concurrent requests share each forward pass
//! (continuous batching). Sequences are admitted first come, first served as
//! slots free up; prompts are fed in chunks so that a long prompt does not
//! stall the sequences already generating. A finished sequence's slot keeps
//! its KV state, and a new prompt that starts the same way takes that slot
//! and prefills only what differs ([`PrefixCache`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use switchyard_core::{BackendError, FinishReason, StreamEvent, Usage};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

use crate::prefix_cache::PrefixCache;
use crate::repetition::RepetitionGuard;
use crate::sampler::{SequenceSampler, build_sampler};
use crate::stop::StopMatcher;
use crate::utf8::Utf8Assembler;

/// A request that has been templated and tokenized, waiting for a slot.
pub(crate) struct Job {
    pub prompt: Vec<LlamaToken>,
    /// Already capped to what fits in the context after the prompt.
    pub max_tokens: u32,
    pub sampling: switchyard_core::SamplingParams,
    pub stop: Vec<String>,
    /// Keeps the answer within the request's `response_format`, or to a
    /// tool call for a template that renders no tools.
    pub grammar: Option<LlamaSampler>,
    /// Stop the generation when it falls into a loop.
    pub repetition_guard: bool,
    pub events: UnboundedSender<Result<StreamEvent, BackendError>>,
    pub enqueued_at: Instant,
    /// The request's span, so the engine's log lines carry its id.
    pub span: tracing::Span,
}

/// What one batch carried for a sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fed {
    Nothing,
    /// Its last sampled token.
    Token,
    /// This many prompt tokens.
    Prompt(usize),
}

struct Sequence {
    job: Job,
    seq_id: i32,
    admitted_order: u64,
    sampler: SequenceSampler,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// Of those, the ones an earlier sequence left there.
    reused: usize,
    /// Position the next fed token takes.
    n_past: i32,
    /// The last sampled token, fed in the next batch.
    pending_token: Option<LlamaToken>,
    /// What the current batch carries for this sequence.
    fed: Fed,
    /// Where this sequence's logits sit in the current batch.
    logits_index: Option<i32>,
    generated: u32,
    utf8: Utf8Assembler,
    stop: StopMatcher,
    repetition: Option<RepetitionGuard>,
    admitted_at: Instant,
    first_token_at: Option<Instant>,
}

impl Sequence {
    fn prompt_done(&self) -> bool {
        self.prefilled == self.job.prompt.len()
    }

    fn send(&self, event: Result<StreamEvent, BackendError>) {
        // A closed receiver means the client left; the sequence is reaped on
        // the next loop iteration.
        let _ = self.job.events.send(event);
    }
}

/// What the engine is doing, for metrics: shared with the async side,
/// written by the engine thread with relaxed atomics (a scrape needs no
/// consistent snapshot, only current figures).
#[derive(Debug, Default)]
pub(crate) struct EngineLoad {
    pub queued: AtomicU64,
    pub running: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens not evaluated because their KV state was reused.
    pub cached_prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Sequences whose answer a grammar constrained.
    pub constrained: AtomicU64,
}

/// Sizes fixed when the context is created.
pub(crate) struct SchedulerLimits {
    pub context_length: u32,
    pub batch_size: u32,
    /// Keep finished sequences' KV state for prompts that share a prefix.
    pub prompt_cache: bool,
}

pub(crate) struct Scheduler<'model> {
    model: &'model LlamaModel,
    vocab: LlamaVocab<'model>,
    ctx: LlamaContext<'model>,
    batch: LlamaBatch<'static>,
    slots: Vec<Option<Sequence>>,
    prefixes: PrefixCache,
    limits: SchedulerLimits,
    admitted_total: u64,
    load: Arc<EngineLoad>,
}

enum Outcome {
    Continue,
    Finished(FinishReason),
}

impl<'model> Scheduler<'model> {
    pub fn new(
        model: &'model LlamaModel,
        ctx: LlamaContext<'model>,
        parallel: u32,
        limits: SchedulerLimits,
        load: Arc<EngineLoad>,
    ) -> Self {
        let batch_tokens = usize::try_from(limits.batch_size).unwrap_or(512);
        Self {
            model,
            vocab: model.vocab(),
            ctx,
            batch: LlamaBatch::new(batch_tokens, 1),
            slots: (0..parallel).map(|_| None).collect(),
            prefixes: PrefixCache::new(usize::try_from(parallel).unwrap_or(1), limits.prompt_cache),
            limits,
            admitted_total: 0,
            load,
        }
    }

    /// Serves jobs until every sender is gone and the last sequence is done.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let mut senders_gone = false;
        loop {
            if self.active() == 0 {
                if senders_gone {
                    return;
                }
                match jobs.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while !senders_gone && self.free_slot().is_some() {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => senders_gone = true,
                }
            }
            self.reap_cancelled();
            self.load
                .running
                .store(self.active() as u64, Ordering::Relaxed);
            if self.active() > 0 {
                self.step();
                self.load
                    .running
                    .store(self.active() as u64, Ordering::Relaxed);
            }
        }
    }

    fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    fn admit(&mut self, mut job: Job) {
        self.load.queued.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            let _entered = job.span.enter();
            debug!("request left before generation started");
            return;
        }
        let free: Vec<usize> = (0..self.slots.len())
            .filter(|&slot| self.slots[slot].is_none())
            .collect();
        let Some(placement) = self.prefixes.place(&free, &job.prompt) else {
            // `run` only admits when a slot is free.
            return;
        };
        let slot = placement.slot;
        let seq_id = i32::try_from(slot).unwrap_or(0);
        let reused = self.keep_prefix(seq_id, placement.reused);
        self.load
            .cached_prompt_tokens
            .fetch_add(reused as u64, Ordering::Relaxed);
        let penalty_window = i32::try_from(self.limits.context_length).unwrap_or(i32::MAX);
        let grammar = job.grammar.take();
        if grammar.is_some() {
            self.load.constrained.fetch_add(1, Ordering::Relaxed);
        }
        let sampler = build_sampler(
            &job.sampling,
            grammar,
            self.vocab.eos(),
            self.model.n_vocab(),
            penalty_window,
        );
        let stop = StopMatcher::new(&job.stop);
        let repetition = job.repetition_guard.then(RepetitionGuard::default);
        self.admitted_total += 1;
        let admitted_at = Instant::now();
        {
            let _entered = job.span.enter();
            debug!(
                slot,
                prompt_tokens = job.prompt.len(),
                cached_prompt_tokens = reused,
                queued_ms = admitted_at.duration_since(job.enqueued_at).as_millis() as u64,
                "sequence admitted"
            );
        }
        self.slots[slot] = Some(Sequence {
            job,
            seq_id,
            admitted_order: self.admitted_total,
            sampler,
            prefilled: reused,
            reused,
            n_past: i32::try_from(reused).unwrap_or(0),
            pending_token: None,
            fed: Fed::Nothing,
            logits_index: None,
            generated: 0,
            utf8: Utf8Assembler::default(),
            stop,
            repetition,
            admitted_at,
            first_token_at: None,
        });
    }

    fn reap_cancelled(&mut self) {
        for slot in 0..self.slots.len() {
            let cancelled = self.slots[slot]
                .as_ref()
                .is_some_and(|seq| seq.job.events.is_closed());
            if cancelled && let Some(seq) = self.slots[slot].take() {
                seq.job.span.in_scope(|| {
                    info!(
                        completion_tokens = seq.generated,
                        "generation cancelled: the client went away"
                    );
                });
                self.release(seq);
            }
        }
    }

    /// One forward pass over every active sequence.
    fn step(&mut self) {
        self.batch.clear();
        let mut budget = usize::try_from(self.limits.batch_size).unwrap_or(512);

        // Decoding sequences first: one token each keeps them all moving.
        for seq in self.slots.iter_mut().flatten() {
            seq.fed = Fed::Nothing;
            seq.logits_index = None;
            if let Some(token) = seq.pending_token
                && budget > 0
                && self
                    .batch
                    .add(token, seq.n_past, &[seq.seq_id], true)
                    .is_ok()
            {
                seq.fed = Fed::Token;
                seq.logits_index = Some(self.batch.n_tokens() - 1);
                budget -= 1;
            }
        }

        // Then prompt chunks, oldest request first.
        let mut prefilling: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| !s.prompt_done()).map(|_| i))
            .collect();
        prefilling.sort_by_key(|&i| self.slots[i].as_ref().map_or(0, |s| s.admitted_order));
        for slot in prefilling {
            if budget == 0 {
                break;
            }
            let Some(seq) = self.slots[slot].as_mut() else {
                continue;
            };
            let end = seq.job.prompt.len().min(seq.prefilled + budget);
            let mut added = 0;
            for index in seq.prefilled..end {
                let last_of_prompt = index + 1 == seq.job.prompt.len();
                let pos = i32::try_from(index).unwrap_or(i32::MAX);
                if self
                    .batch
                    .add(seq.job.prompt[index], pos, &[seq.seq_id], last_of_prompt)
                    .is_err()
                {
                    break;
                }
                added += 1;
                if last_of_prompt {
                    seq.logits_index = Some(self.batch.n_tokens() - 1);
                }
            }
            seq.fed = Fed::Prompt(added);
            budget -= added;
        }

        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(error) = self.ctx.decode(&mut self.batch) {
            warn!(%error, "llama.cpp decode failed; failing the sequences in this batch");
            self.fail_all(&format!(
                "the local engine failed to evaluate the batch: {error}"
            ));
            return;
        }

        // Book-keeping of what the batch fed, then sampling.
        let mut prompt_tokens = 0;
        let mut sampled = 0;
        for slot in 0..self.slots.len() {
            let outcome = match self.slots[slot].as_mut() {
                None => continue,
                Some(seq) => {
                    match seq.fed {
                        Fed::Nothing => {}
                        Fed::Token => {
                            seq.pending_token = None;
                            seq.n_past += 1;
                        }
                        Fed::Prompt(count) => {
                            prompt_tokens += count as u64;
                            seq.prefilled += count;
                            seq.n_past += i32::try_from(count).unwrap_or(0);
                        }
                    }
                    match seq.logits_index {
                        Some(index) => {
                            sampled += 1;
                            let token = seq.sampler.sample(&self.ctx, index);
                            accept_token(&self.vocab, seq, token, self.limits.context_length)
                        }
                        None => Outcome::Continue,
                    }
                }
            };
            if let Outcome::Finished(reason) = outcome
                && let Some(seq) = self.slots[slot].take()
            {
                self.finish(seq, reason);
            }
        }
        self.load
            .prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        self.load
            .generated_tokens
            .fetch_add(sampled, Ordering::Relaxed);
    }

    fn finish(&mut self, mut seq: Sequence, reason: FinishReason) {
        let tail = seq.utf8.finish();
        let mut rest = seq.stop.push(&tail).emit;
        rest.push_str(&seq.stop.finish());
        if !rest.is_empty() {
            seq.send(Ok(StreamEvent::Delta(rest)));
        }
        let usage = Usage {
            cache_read_tokens: u32::try_from(seq.reused).unwrap_or(u32::MAX),
            ..Usage::new(
                u32::try_from(seq.job.prompt.len()).unwrap_or(u32::MAX),
                seq.generated,
            )
        };
        // The gauge drops before the client can see the end: whoever reads
        // it after an answer never counts that answer as still running.
        self.load
            .running
            .store(self.active() as u64, Ordering::Relaxed);
        seq.send(Ok(StreamEvent::Finish(reason)));
        seq.send(Ok(StreamEvent::Usage(usage)));
        log_finished(&seq, reason);
        self.release(seq);
    }

    fn fail_all(&mut self, message: &str) {
        for slot in 0..self.slots.len() {
            if let Some(seq) = self.slots[slot].take() {
                seq.send(Err(BackendError::internal(message)));
                // What a failed batch left in the KV cache is unknown.
                self.prefixes.forget(slot);
                self.clear_sequence(seq.seq_id);
            }
        }
    }

    /// Frees a sequence's slot, keeping its KV state for a later prompt
    /// that starts the same way when the prompt cache is on.
    fn release(&mut self, seq: Sequence) {
        let slot = usize::try_from(seq.seq_id).unwrap_or(0);
        if !self.prefixes.enabled() {
            self.clear_sequence(seq.seq_id);
            return;
        }
        let Sequence {
            mut job, prefilled, ..
        } = seq;
        // Positions 0..prefilled hold the prompt. The answer's positions
        // are not offered for reuse: they were evaluated one token at a
        // time, and llama.cpp's one-token and batched kernels differ in
        // the last bits, enough to change a later greedy answer (seen on
        // the third turn of a conversation). Prompt positions give the
        // answers a full prefill gives.
        let mut tokens = std::mem::take(&mut job.prompt);
        tokens.truncate(prefilled);
        self.prefixes.store(slot, tokens);
    }

    /// Drops a sequence's KV state from `keep` on and says how many leading
    /// positions it still holds: `keep`, or 0 where the model's memory
    /// cannot remove part of a sequence.
    fn keep_prefix(&mut self, seq_id: i32, keep: usize) -> usize {
        let seq = u32::try_from(seq_id).ok();
        let from = u32::try_from(keep).ok();
        match self.ctx.clear_kv_cache_seq(seq, from, None) {
            Ok(true) => keep,
            Ok(false) => {
                debug!(
                    seq_id,
                    "partial KV removal refused; prefilling the whole prompt"
                );
                self.clear_sequence(seq_id);
                0
            }
            Err(error) => {
                warn!(%error, seq_id, "could not trim a sequence in the KV cache");
                self.clear_sequence(seq_id);
                0
            }
        }
    }

    fn clear_sequence(&mut self, seq_id: i32) {
        let seq = u32::try_from(seq_id).ok();
        if let Err(error) = self.ctx.clear_kv_cache_seq(seq, None, None) {
            warn!(%error, seq_id, "could not clear a finished sequence from the KV cache");
        }
    }
}

fn log_finished(seq: &Sequence, reason: FinishReason) {
    let _entered = seq.job.span.enter();
    let now = Instant::now();
    let first = seq.first_token_at.unwrap_or(now);
    let prompt_secs = first.duration_since(seq.admitted_at).as_secs_f64();
    let decode_secs = now.duration_since(first).as_secs_f64();
    let rate = |tokens: usize, secs: f64| {
        if secs > 0.0 {
            tokens as f64 / secs
        } else {
            0.0
        }
    };
    let evaluated = seq.job.prompt.len() - seq.reused;
    info!(
        finish_reason = reason.as_str(),
        prompt_tokens = seq.job.prompt.len(),
        cached_prompt_tokens = seq.reused,
        completion_tokens = seq.generated,
        queued_ms = seq
            .admitted_at
            .duration_since(seq.job.enqueued_at)
            .as_millis() as u64,
        prompt_tokens_per_s = rate(evaluated, prompt_secs).round(),
        decode_tokens_per_s = rate(seq.generated.saturating_sub(1) as usize, decode_secs).round(),
        "generation finished"
    );
}

/// Handles one sampled token: stream its text, decide whether to go on.
fn accept_token(
    vocab: &LlamaVocab<'_>,
    seq: &mut Sequence,
    token: LlamaToken,
    context_length: u32,
) -> Outcome {
    if seq.first_token_at.is_none() {
        seq.first_token_at = Some(Instant::now());
    }
    if vocab.is_eog(token) {
        return Outcome::Finished(FinishReason::Stop);
    }
    seq.generated += 1;
    let piece = vocab.token_to_piece(token, false, None);
    let text = seq.utf8.push(&piece);
    let scan = seq.stop.push(&text);
    if !scan.emit.is_empty() {
        seq.send(Ok(StreamEvent::Delta(scan.emit)));
    }
    if scan.stopped {
        seq.stop = StopMatcher::new(&[]);
        seq.utf8 = Utf8Assembler::default();
        return Outcome::Finished(FinishReason::Stop);
    }
    if let Some(found) = seq.repetition.as_mut().and_then(|g| g.push(token.0)) {
        let _entered = seq.job.span.enter();
        info!(
            period_tokens = found.period,
            repeated_tokens = found.tokens,
            completion_tokens = seq.generated,
            "repetition guard: the generation fell into a loop and was stopped"
        );
        return Outcome::Finished(FinishReason::Length);
    }
    // The sampled token would be fed at position `n_past`.
    let context_full = u32::try_from(seq.n_past).unwrap_or(u32::MAX) >= context_length;
    if seq.generated >= seq.job.max_tokens || context_full {
        return Outcome::Finished(FinishReason::Length);
    }
    seq.pending_token = Some(token);
    Outcome::Continue
}
