//! The privacy lifecycle: what is stored about people, for how long, and the proof
//! that it was removed.
//!
//! | module | what |
//! |---|---|
//! | `tables` | names, schemas and specs of the privacy tables; the keyed subject hash |
//! | `keys` | the pseudonym epoch keys, wrapped under the master key, in the lake |
//! | `geo` | IP to city and country, offline |
//! | `consent` | the consent state the readings runner filters by |
//! | `subjects` | the subject-events task: ledger, profiles, access log |
//! | `lifecycle` | erasure and retention over every table, and their audit rows |
//! | `erasure` | the erasure-requests task, driving `lifecycle` |

pub mod consent;
pub mod erasure;
pub mod geo;
pub mod keys;
pub mod lifecycle;
pub mod subjects;
pub mod tables;
