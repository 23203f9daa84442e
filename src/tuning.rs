//! Which tuning records a compile uses: the database given (`--db FILE`), else the default
//! one ([`search::Db::default_path`]) when that file exists, else none. The resulting
//! [`Planner`] schedules every kernel the JIT or the AOT path compiles.

use search::records::{Db, Error};
use search::Planner;
use std::path::Path;

/// The planner for Cranelift on the host at `threads` threads, with the records of `db`
/// (or of the default database when it exists). A missing `db` file has no records; lines
/// it skipped are in `planner.records.warnings`.
pub fn planner(db: Option<&Path>, threads: usize) -> Result<Planner, Error> {
    planner_for(runtime::CodeGen::Cranelift, db, threads)
}

/// [`planner`] for the host as `codegen` sees it (its vector width).
pub fn planner_for(codegen: runtime::CodeGen, db: Option<&Path>, threads: usize) -> Result<Planner, Error> {
    with_db(codegen.planner(threads), db)
}

/// `planner` with the records of `db` (or of the default database when it exists).
pub fn with_db(planner: Planner, db: Option<&Path>) -> Result<Planner, Error> {
    let db = match db {
        Some(p) => Some(Db::open(p)),
        None => Db::default_existing(),
    };
    Ok(match db {
        Some(db) => planner.with_records(db.load()?),
        None => planner,
    })
}

/// The warnings of the records a planner loaded (skipped lines), for the CLI to print.
pub fn warnings(planner: &Planner) -> &[String] {
    planner.records.as_ref().map_or(&[], |r| r.warnings.as_slice())
}
