//! Stage 2: may the call go ahead — role, model allow-list, budgets,
//! concurrency and rate windows, charged all or nothing.

use std::sync::Arc;

use switchyard_core::ChatRequest;
use switchyard_governance::{Admission, Caller, Governance, RequestFacts};
use tracing::Instrument;

use crate::{PipelineError, Snapshot};

/// Longest answer a request is assumed to ask for when it sets no
/// `max_tokens`, for the token-limit estimate made before the call.
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 256;

/// Prompt tokens guessed from characters (about four per token in English
/// text), plus the answer the request allows.
pub fn estimate_chat(request: &ChatRequest) -> u64 {
    let characters: usize = request.messages.iter().map(|m| m.text().len()).sum();
    estimate_text(characters).saturating_add(
        request
            .max_tokens
            .map_or(DEFAULT_OUTPUT_ESTIMATE, u64::from),
    )
}

/// Tokens guessed from a character count.
pub fn estimate_text(characters: usize) -> u64 {
    u64::try_from(characters.div_ceil(4)).unwrap_or(u64::MAX)
}

/// Admits `caller`'s call under the snapshot's policy.
pub async fn admit(
    governance: &Arc<Governance>,
    snapshot: &Snapshot,
    caller: &Caller,
    facts: RequestFacts,
) -> Result<Admission, PipelineError> {
    Ok(governance
        .admit(snapshot.policy.clone(), caller, facts)
        .instrument(tracing::debug_span!("limits"))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{ChatMessage, Role};

    #[test]
    fn estimates_count_prompt_and_allowed_answer() {
        let mut request =
            ChatRequest::new("m", vec![ChatMessage::new(Role::User, "x".repeat(400))]);
        request.max_tokens = Some(50);
        assert_eq!(estimate_chat(&request), 150);
        request.max_tokens = None;
        assert_eq!(estimate_chat(&request), 100 + DEFAULT_OUTPUT_ESTIMATE);
    }
}
