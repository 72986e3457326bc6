//! The host's clocks: the tick's timer and today's local date. The core never reads a clock;
//! what it needs of time comes from here.

pub mod calendar;
pub mod ticker;
