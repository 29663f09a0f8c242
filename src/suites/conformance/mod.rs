//! Conformance: a client nobody here wrote — the official OpenAI Python SDK — parses every
//! reply of the simulator (plain, streamed, legacy, models) and maps each simulated error to
//! its own exception type; and the same SDK talks to the real router in front of it.

mod sdk;

pub use sdk::cases;
