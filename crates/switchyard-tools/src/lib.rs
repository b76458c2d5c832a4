//! Tools Switchyard runs itself for models, in the tool loop of the
//! request pipeline: a [`calculator`] (exact arithmetic), a [`clock`] (now,
//! in a time zone), [`http_fetch`] (pages of allowed hosts, as text) and
//! [`sandbox`]'s `run_code` (generated code in an isolated process). A [`Toolbox`] holds the ones a configuration offers.

pub mod calculator;
pub mod clock;
pub mod code_checks;
pub mod http_fetch;
pub mod mcp;
pub mod sandbox;
mod toolbox;

pub use toolbox::{Tool, ToolError, ToolUser, Toolbox, parse_arguments};
