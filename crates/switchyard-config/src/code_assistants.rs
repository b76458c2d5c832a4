//! `[code_assistants.NAME]`: model names that write code, check it in the
//! sandbox, and repair it before answering.

use serde::Deserialize;

use crate::FieldProblem;

/// One code assistant: a request whose model is its name is answered by
/// `model`, whose code is checked and repaired before the answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeAssistantConfig {
    /// The model or route that writes the code.
    pub model: String,
    /// A model or route that explains the checked code to the user after
    /// it; `None`: the code model's own words are the explanation.
    #[serde(default)]
    pub explain_model: Option<String>,
    /// The checks the code goes through, in order.
    #[serde(default = "default_checks")]
    pub checks: Vec<CodeCheck>,
    /// Times the code model is asked to fix code that failed a check.
    #[serde(default = "default_max_repairs")]
    pub max_repairs: u32,
    /// Words added to the code model's instructions (a house style, say).
    #[serde(default)]
    pub instructions: Option<String>,
}

/// A check the code assistant runs on generated Python code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeCheck {
    /// It compiles.
    Syntax,
    /// The unit tests the user gave, or the model wrote, pass.
    Tests,
    /// A linter (pyflakes, when installed) finds nothing.
    Lint,
}

impl CodeCheck {
    /// Its name in answers, audit records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Syntax => "syntax",
            Self::Tests => "tests",
            Self::Lint => "lint",
        }
    }
}

/// The most repairs one request may ask for: each is a model call.
pub const MAX_REPAIRS: u32 = 10;

fn default_checks() -> Vec<CodeCheck> {
    vec![CodeCheck::Syntax, CodeCheck::Tests, CodeCheck::Lint]
}

fn default_max_repairs() -> u32 {
    2
}

impl CodeAssistantConfig {
    /// Checks the assistant `name` against the models and routes there
    /// are (`known`); `taken` when a model, route or other assistant
    /// already has its name.
    pub(crate) fn validate(
        &self,
        name: &str,
        taken: bool,
        known: impl Fn(&str) -> bool,
    ) -> Result<(), FieldProblem> {
        let field = |f: &str| format!("code_assistants.{name}.{f}");
        if taken {
            return Err((
                format!("code_assistants.{name}"),
                "a code assistant cannot share its name with a model, route or assistant".into(),
            ));
        }
        for (key, model) in [
            ("model", Some(&self.model)),
            ("explain_model", self.explain_model.as_ref()),
        ] {
            if let Some(model) = model.filter(|m| !known(m)) {
                return Err((
                    field(key),
                    format!("`{model}` is not a configured model or route"),
                ));
            }
        }
        if self.max_repairs > MAX_REPAIRS {
            return Err((
                field("max_repairs"),
                format!("must be at most {MAX_REPAIRS}"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(check) = self.checks.iter().find(|c| !seen.insert(**c)) {
            return Err((
                field("checks"),
                format!("`{}` is listed twice", check.name()),
            ));
        }
        Ok(())
    }
}
