//! The cache of other services.
