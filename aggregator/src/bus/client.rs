//! Calls to other services.
