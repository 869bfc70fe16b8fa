"""`make lambda-e2e`: the Lambda bootstraps, as packaged, under cargo-lambda's runtime emulator.

Run: scripts/lambda-e2e.sh [--bin-dir DIR] [--batch-size N] [--lambda-migrates auto|yes|no] [--keep]
(`python -m lambda_e2e` from scripts/ with the project venv). Steps:

 1. the four `bootstrap`s from target/lambda/<fn>/bootstrap.zip (or --bin-dir), checked to be
    executables for this machine; own stream/bucket/table on the local stack; database
    analytics_lambda_e2e dropped and created; the schema is applied by the consumer Lambdas at
    init (when the binary does that; else first by its `migrate` command);
 2. `cargo lambda watch --only-lambda-apis` (two instances: the main one, and a side one for the
    failure case and the init benchmark); each bootstrap is started by us with
    AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:<probe>/.rt/<function>, a probe that forwards to the
    emulator and notes the first /runtime/invocation/next;
 3. producer: every case of producer.py as an API Gateway v1 and v2 proxy event; 202 bodies give
    the acknowledged event_ids; 4xx bodies must equal the local server's (same binary, no
    AWS_LAMBDA_RUNTIME_API);
 4. records received two hours ago and poison records put straight onto the stream;
 5. consumer: every record read back from kinesalite, shaped into the mapping's KinesisEvents;
    N cold starts at once against the fresh database, one first batch each, the rest, a
    redelivered batch, a failing batch (unwritable lake: its first sequence number comes back as
    the failure), its bisected halves and the whole again, a bisected half of a good batch —
    every response checked against ReportBatchItemFailures;
 6. compactor: the EventBridge scheduled event (and Terraform's {"hours_back": 24}); the seeded
    closed hour must be compacted;
 7. verify (loadtest) over the acks, then exact equality per type: acknowledged (plus the seeded
    records) == lake == DynamoDB == PostgreSQL event_type_counts; then forget invoked with a
    request for one of the producer's visitors (its items and lake rows gone, the audit without
    the raw ID) and with the schedule's empty payload (nothing pending);
 8. every stdout line of every process (after step 9): EMF lines validated against emf.schema.json;
 9. the database as on AWS (secure_db.py): a TLS-only PostgreSQL with a CA made here, migrator
    and application secrets in moto; a wrong CA and a wrong host name fail the consumer's init;
    the consumer migrates and creates the application role; the password rotated mid-run and
    before the compactor runs; counts exact;
10. init times: each bootstrap started 20 times (median), written to bench/out/lambda-e2e/init.json.
"""
