//! The agent entry: what runs inside a sandbox, working on one request in a
//! checkout of the repository.

pub mod checkout;
pub mod llm;
pub mod redact;
pub mod tools;
