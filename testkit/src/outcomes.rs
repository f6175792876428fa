//! Counting outcome writes: proof that a workflow's outcome was written exactly once, however
//! many processes raced to finish or recover it.

use sqlx::PgConnection;

/// Installs a trigger that logs every outcome write (a status set to SUCCESS or ERROR in
/// `dbos.workflow_status`) into table `outcome_writes (workflow_uuid, status)`. Call it after
/// the system database is migrated.
pub async fn count_outcome_writes(c: &mut PgConnection) {
    sqlx::raw_sql(
        "CREATE TABLE outcome_writes (workflow_uuid text, status text);
         CREATE FUNCTION count_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO outcome_writes VALUES (NEW.workflow_uuid, NEW.status); RETURN NEW; END $$;
         CREATE TRIGGER count_outcome AFTER UPDATE OF status ON dbos.workflow_status
         FOR EACH ROW WHEN (NEW.status IN ('SUCCESS', 'ERROR')) EXECUTE FUNCTION count_outcome();",
    )
    .execute(c)
    .await
    .expect("install the outcome-write counter");
}
