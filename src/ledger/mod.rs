//! Ledger: the sink that receives the router's logging payloads, the team's price table,
//! expected costs, per-tenant accumulation and three-way reconciliation.

pub mod book;
pub mod payload;
pub mod prices;
pub mod reconcile;
pub mod sink;
