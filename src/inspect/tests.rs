//! Tests of the core's output that need the inspection tools: the dispatch tree traced and
//! diffed against the flat layout, and partial plans on the fake kernel diffed against full
//! loads.

mod dispatch;
mod plan_props;
