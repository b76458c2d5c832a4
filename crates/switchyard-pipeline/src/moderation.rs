//! The moderation operation: the guardrail policies' input checks run over
//! texts without generating anything, so applications can check content
//! the way a chat request would be checked.

use switchyard_guardrails::Flag;

use crate::{Pipeline, Snapshot};

impl Pipeline {
    /// What the input checks that apply to `model` (the defaults, plus
    /// those attached to it when it names a model or route) find in each
    /// text, under `snapshot`: the one its caller was authenticated with.
    pub fn moderate(
        &self,
        snapshot: &Snapshot,
        model: Option<&str>,
        texts: &[String],
    ) -> Vec<Vec<Flag>> {
        let applied = snapshot.guardrails.for_model(model.unwrap_or(""));
        texts.iter().map(|text| applied.moderate(text)).collect()
    }
}
