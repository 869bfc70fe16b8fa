"""Static checks of the Terraform configuration (no providers, no AWS account needed).

Each test pins one property the deployment promises (README.md); checkov covers
generic hardening (tests/test_checkov.py).
"""

from __future__ import annotations

import json
import re

import pytest

from tfconfig import REPO_ROOT, TF_DIR, attr, blocks, expr, local_refs

# Environment variable names the Rust binaries read (the README's configuration table).
PRODUCER_ENV = {
    "STREAM_NAME", "BIND_ADDR", "METRICS_ADDR", "SITES_CONFIG", "SITES_JSON", "DEFAULT_SITE_KEY", "PUBLISH_BUDGET_MS",
    "LINGER_MS", "LOG_FORMAT", "RUST_LOG", "GEOIP_COUNTRY_DB",
}
CONSUMER_ENV = {
    "LAKE_BUCKET", "DYNAMODB_TABLE", "DATABASE_URL", "DATABASE_SECRET_ARN", "DATABASE_MIGRATOR_SECRET_ARN",
    "DATABASE_HOST",
    "DATABASE_PORT", "DATABASE_NAME", "DATABASE_SSL_ROOT_CERT", "DEDUP_WINDOW_HOURS",
    "DYNAMODB_TTL_DAYS", "SITES_JSON", "DYNAMODB_CONCURRENCY", "SINK_BUDGET_MS", "STREAM_NAME",
    "RUNNER_BATCH_SIZE", "RUNNER_BATCH_WINDOW_MS", "RUNNER_MAX_ATTEMPTS", "METRICS_ADDR",
    "LOG_FORMAT", "RUST_LOG",
}

EXPECTED_FILES = {
    "versions.tf", "variables.tf", "outputs.tf", "network.tf", "stream.tf", "lambda.tf", "api.tf",
    "lake.tf", "dynamodb.tf", "rds.tf", "observability.tf", "alarms.tf",
}

OPEN_CIDRS = {"0.0.0.0/0", "::/0"}


def lambda_environment(tf, function: str) -> dict:
    """The function's environment map, following `variables = {for ... in local.X ...}`."""
    env_blocks = blocks(tf.resource("aws_lambda_function", function), "environment")
    assert len(env_blocks) == 1, f"{function}: expected one environment block"
    variables = attr(env_blocks[0], "variables")
    if isinstance(variables, dict):
        return variables
    refs = local_refs(expr(variables))
    assert refs, f"{function}: environment.variables is neither a map nor a local: {variables!r}"
    env = tf.locals[refs[0]]
    assert isinstance(env, dict), f"local.{refs[0]} is not a literal map"
    return env


# --- Layout -------------------------------------------------------------------


def test_files_are_split_as_documented(tf):
    missing = EXPECTED_FILES - set(tf.files)
    assert not missing, f"missing files: {sorted(missing)}"


def test_terraform_and_provider_versions(tf):
    text = tf.files["versions.tf"]
    assert re.search(r'required_version\s*=\s*">=\s*1\.6', text)
    assert "hashicorp/aws" in text


# --- Lambdas --------------------------------------------------------------------


def test_consumer_lambda_runs_in_private_subnets(tf):
    consumer = tf.resource("aws_lambda_function", "consumer")
    vpc = blocks(consumer, "vpc_config")
    assert len(vpc) == 1, "consumer needs a vpc_config"
    assert "aws_subnet.private" in expr(attr(vpc[0], "subnet_ids"))
    assert "aws_security_group.consumer" in expr(attr(vpc[0], "security_group_ids"))
    assert attr(tf.resource("aws_subnet", "private"), "map_public_ip_on_launch") is False


@pytest.mark.parametrize("function,zip_var,crate", [("producer", "producer_zip", "producer-api"), ("consumer", "consumer_zip", "stream-consumer"), ("compactor", "compactor_zip", "compactor"), ("forget", "forget_zip", "forget")])
def test_lambdas_use_al2023_custom_runtime_and_cargo_lambda_zips(tf, function, zip_var, crate):
    fn = tf.resource("aws_lambda_function", function)
    assert attr(fn, "runtime") == "provided.al2023"
    assert attr(fn, "handler") == "bootstrap"
    assert "var.lambda_architecture" in expr(attr(fn, "architectures"))
    assert tf.default("lambda_architecture") == "arm64"
    assert tf.default(zip_var) == f"../target/lambda/{crate}/bootstrap.zip"
    assert "filebase64sha256" in expr(attr(fn, "source_code_hash"))
    assert "reserved_concurrent_executions" in fn
    assert attr(blocks(fn, "tracing_config")[0], "mode") == "Active"


@pytest.mark.parametrize("function,documented,required", [
    ("producer", PRODUCER_ENV, {"STREAM_NAME"}),
    ("consumer", CONSUMER_ENV, {"LAKE_BUCKET", "DYNAMODB_TABLE", "DATABASE_SECRET_ARN", "DATABASE_HOST"}),
])
def test_lambda_environment_names_are_documented(tf, function, documented, required):
    env = lambda_environment(tf, function)
    names = set(env)
    assert names <= documented, f"{function}: undocumented env vars {sorted(names - documented)}"
    assert required <= names, f"{function}: missing env vars {sorted(required - names)}"
    assert not any(n.startswith("AWS_") for n in names), "AWS_* names are reserved by Lambda"
    text = (REPO_ROOT / "README.md").read_text()
    for name in names:
        assert re.search(rf"\b{name}\b", text), f"{name} not in the README's configuration table"


def test_producer_role_can_only_put_records(tf):
    doc = tf.data["aws_iam_policy_document"]["producer"]
    actions = set()
    for st in blocks(doc, "statement"):
        actions |= set(attr(st, "actions"))
        assert attr(st, "resources") != ["*"], "producer policy must name its resources"
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "kinesis:PutRecords", "kms:GenerateDataKey", "kms:Decrypt"}


def test_consumer_role_s3_access_is_limited_to_lake_prefixes(tf):
    doc = tf.data["aws_iam_policy_document"]["consumer"]
    for st in blocks(doc, "statement"):
        actions = attr(st, "actions")
        resources = [expr(r) for r in attr(st, "resources")]
        assert resources != ["*"], f"{attr(st, 'sid')}: wildcard resource"
        if any(a in ("s3:PutObject", "s3:GetObject") for a in actions):
            assert all(
                r.endswith("${local.lake_events_prefix}*") or r.endswith("${local.lake_dead_letter_prefix}*")
                for r in resources
            ), resources
    assert tf.locals["lake_events_prefix"] == "events/"
    assert tf.locals["lake_dead_letter_prefix"] == "dead-letter/"


# --- Event source mapping ---------------------------------------------------------


def test_event_source_mapping_reports_partial_failures_and_has_a_destination(tf):
    esm = tf.resource("aws_lambda_event_source_mapping", "consumer")
    assert attr(esm, "function_response_types") == ["ReportBatchItemFailures"]
    assert attr(esm, "bisect_batch_on_function_error") is True
    on_failure = blocks(blocks(esm, "destination_config")[0], "on_failure")[0]
    assert "aws_sqs_queue.consumer_failures.arn" in expr(attr(on_failure, "destination_arn"))
    for arg in ("batch_size", "maximum_batching_window_in_seconds", "parallelization_factor",
                "maximum_retry_attempts", "maximum_record_age_in_seconds"):
        assert arg in esm, f"event source mapping sets no {arg}"
    assert tf.default("consumer_batch_size") == 10000
    queue = tf.resource("aws_sqs_queue", "consumer_failures")
    assert "aws_kms_key" in expr(attr(queue, "kms_master_key_id"))


def test_stream_is_encrypted_with_the_customer_key(tf):
    stream = tf.resource("aws_kinesis_stream", "events")
    assert attr(stream, "encryption_type") == "KMS"
    assert "aws_kms_key.main" in expr(attr(stream, "kms_key_id"))
    assert "var.stream_mode" in expr(attr(blocks(stream, "stream_mode_details")[0], "stream_mode"))
    assert attr(tf.resource("aws_kms_key", "main"), "enable_key_rotation") is True


# --- Network --------------------------------------------------------------------


def test_vpc_endpoints_cover_every_service_the_private_subnets_use(tf):
    endpoints = tf.resources["aws_vpc_endpoint"]
    gateway = {
        expr(attr(body, "service_name")).rsplit(".", 1)[-1]
        for body in endpoints.values()
        if attr(body, "vpc_endpoint_type") == "Gateway"
    }
    assert {"s3", "dynamodb"} <= gateway
    interface = endpoints["interface"]
    assert attr(interface, "vpc_endpoint_type") == "Interface"
    assert attr(interface, "private_dns_enabled") is True
    assert "local.interface_endpoint_services" in expr(attr(interface, "for_each"))
    assert "aws_nat_gateway" not in tf.resources, "the design has no NAT gateway"


# The AWS clients the code in the private subnets builds (service_kit::aws::<factory>), and the
# VPC endpoint service each needs.
CLIENT_ENDPOINTS = {"s3": "s3", "dynamodb": "dynamodb", "secrets_manager": "secretsmanager", "kinesis": "kinesis-streams"}


def test_interface_endpoints_are_only_those_the_private_subnets_call(tf):
    """Each interface endpoint is billed per AZ-hour, used or not: keep exactly the services that
    the in-VPC code calls and no free gateway endpoint serves. In the consumer, only what it builds
    before handing over to the Lambda runtime counts: the rest is the local runner (Kinesis)."""
    consumer = (REPO_ROOT / "stream-consumer" / "src" / "main.rs").read_text()
    on_lambda, marker, local_runner = consumer.partition("lambda_runtime::run(")
    assert marker, "stream-consumer/src/main.rs no longer hands over to lambda_runtime::run"
    # Every lake-tools binary is a Lambda in the private subnets (the compactor, forget).
    tools = "".join(p.read_text() for p in sorted((REPO_ROOT / "lake-tools" / "src" / "bin").glob("*.rs")))
    assert "fn main" in tools, "no lake-tools binary found"
    built = set(re.findall(r"\baws::([a-z0-9_]+)\(&sdk", on_lambda + tools))
    assert {"s3", "secrets_manager"} <= built, built
    unknown = built - set(CLIENT_ENDPOINTS)
    assert not unknown, f"map {sorted(unknown)} to its VPC endpoint service"
    needed = {CLIENT_ENDPOINTS[c] for c in built} - {"s3", "dynamodb"}
    # RDS Proxy reads the database secrets from the private subnets too.
    needed |= {"secretsmanager"}
    assert set(tf.locals["interface_endpoint_services"]) == needed
    assert "aws::kinesis(&sdk" in local_runner, "the local runner's Kinesis client moved: does the Lambda call Kinesis now?"


def test_no_security_group_ingress_from_the_internet(tf):
    for name, sg in tf.resources.get("aws_security_group", {}).items():
        for rule in blocks(sg, "ingress"):
            cidrs = set(attr(rule, "cidr_blocks", []) or []) | set(attr(rule, "ipv6_cidr_blocks", []) or [])
            assert not cidrs & OPEN_CIDRS, f"aws_security_group.{name} is open to the internet"
    for name, rule in tf.resources.get("aws_security_group_rule", {}).items():
        if attr(rule, "type") == "ingress":
            assert not set(attr(rule, "cidr_blocks", []) or []) & OPEN_CIDRS, name
    for name, rule in tf.resources.get("aws_vpc_security_group_ingress_rule", {}).items():
        for key in ("cidr_ipv4", "cidr_ipv6"):
            assert attr(rule, key) not in OPEN_CIDRS, f"{name}: {key} open to the internet"


def test_only_the_consumer_and_the_dashboard_reach_postgres(tf):
    rules = tf.resources["aws_vpc_security_group_ingress_rule"]
    to_rds = {n: r for n, r in rules.items() if "aws_security_group.rds.id" in expr(attr(r, "security_group_id"))}
    assert to_rds, "RDS security group has no ingress rule"
    # The Grafana host's login is the dashboard's read-only one (migration 0006, README "Site
    # analytics dashboard").
    sources = ("aws_security_group.consumer", "aws_security_group.rds_proxy", "aws_security_group.grafana")
    for name, rule in to_rds.items():
        assert attr(rule, "from_port") == 5432 and attr(rule, "to_port") == 5432, name
        source = expr(attr(rule, "referenced_security_group_id"))
        assert any(s in source for s in sources), name
        assert attr(rule, "cidr_ipv4") is None, name
    proxy_in = rules["proxy_from_consumer"]
    assert "aws_security_group.consumer" in expr(attr(proxy_in, "referenced_security_group_id"))


# --- RDS --------------------------------------------------------------------------


def test_rds_is_private_encrypted_and_tls_only(tf):
    db = tf.resource("aws_db_instance", "postgres")
    assert attr(db, "publicly_accessible") is False
    assert attr(db, "storage_encrypted") is True
    assert attr(db, "manage_master_user_password") is True
    assert attr(db, "deletion_protection") == "${var.deletion_protection}"
    assert tf.default("deletion_protection") is True
    assert "aws_db_subnet_group.postgres" in expr(attr(db, "db_subnet_group_name"))
    assert "aws_subnet.private" in expr(attr(tf.resource("aws_db_subnet_group", "postgres"), "subnet_ids"))
    params = {attr(p, "name"): attr(p, "value") for p in blocks(tf.resource("aws_db_parameter_group", "postgres"), "parameter")}
    assert params.get("rds.force_ssl") == "1"
    assert re.fullmatch(r"1[56](\.\d+)?", tf.default("rds_engine_version"))
    proxy = tf.resource("aws_db_proxy", "postgres")
    assert "var.enable_rds_proxy" in expr(attr(proxy, "count"))
    assert attr(proxy, "require_tls") is True


def test_two_database_roles_migrator_and_application(tf):
    """The consumer migrates as the master user and works as the DML-only application role; the
    compactor never sees the master secret; the application's password stays out of the state."""
    consumer = lambda_environment(tf, "consumer")
    assert consumer["DATABASE_SECRET_ARN"] == "${local.db_app_secret_arn}"
    assert consumer["DATABASE_MIGRATOR_SECRET_ARN"] == "${local.db_secret_arn}"
    compactor = lambda_environment(tf, "compactor")
    assert compactor["DATABASE_SECRET_ARN"] == "${local.db_app_secret_arn}"
    assert "DATABASE_MIGRATOR_SECRET_ARN" not in compactor
    assert tf.locals["db_app_secret_arn"] == "${aws_secretsmanager_secret.db_app.arn}"
    statements = {attr(st, "sid"): st for st in blocks(tf.data["aws_iam_policy_document"]["consumer"], "statement")}
    assert sorted(expr(r) for r in attr(statements["ReadDatabaseSecrets"], "resources")) == [
        "${local.db_app_secret_arn}", "${local.db_secret_arn}"]
    version = tf.resource("aws_secretsmanager_secret_version", "db_app")
    written = expr(attr(version, "secret_string"))
    for field in ("username", "password", "masterarn", "host", "dbname"):
        assert field in written, field
    assert "data.aws_secretsmanager_random_password.db_app" in written
    # Generated once: a new draw on every plan must not overwrite what rotation set.
    assert "secret_string" in expr(attr(blocks(version, "lifecycle")[0], "ignore_changes"))
    assert tf.default("rds_app_username") != tf.default("rds_master_username")
    assert "aws_kms_key.main" in expr(attr(tf.resource("aws_secretsmanager_secret", "db_app"), "kms_key_id"))
    proxy_secrets = [expr(attr(a, "secret_arn")) for a in blocks(tf.resource("aws_db_proxy", "postgres"), "auth")]
    assert sorted(proxy_secrets) == ["${local.db_app_secret_arn}", "${local.db_secret_arn}"]
    grants = (REPO_ROOT / "schemas" / "migrations" / "0003_roles.sql").read_text()
    assert "analytics_writer" in grants and "REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations" in grants


# --- API ----------------------------------------------------------------------------


def test_rest_api_body_is_the_repository_openapi_file(tf):
    api = tf.resource("aws_api_gateway_rest_api", "producer")
    body = expr(attr(api, "body"))
    assert "templatefile(" in body
    assert "local.openapi_path" in body or "producer-api/openapi.yaml" in body
    assert "producer_invoke_arn" in body
    assert tf.locals["openapi_path"].endswith("/../producer-api/openapi.yaml")
    assert tf.default("api_type") == "rest"
    for name in ("aws_apigatewayv2_api", "aws_apigatewayv2_stage"):
        assert "producer" in tf.resources[name], f"HTTP API alternative missing {name}"


def test_openapi_file_fits_templatefile():
    """openapi.yaml (written alongside) must reference ${producer_invoke_arn} and nothing else."""
    spec = REPO_ROOT / "producer-api" / "openapi.yaml"
    if not spec.exists():
        pytest.skip("producer-api/openapi.yaml not written yet")
    text = spec.read_text()
    placeholders = set(re.findall(r"(?<!\$)\$\{([^}]*)\}", text))
    assert placeholders == {"producer_invoke_arn"}, (
        f"templatefile placeholders {sorted(placeholders)}; escape literal ${{ as $${{"
    )
    assert not re.search(r"(?<!%)%\{", text), "templatefile directives (%{) must be escaped as %%{"
    assert "x-amazon-apigateway-integration" in text


def test_openapi_declares_no_request_validator(tf):
    """API Gateway validates nothing, and nothing claims it does (api.tf says why): a body
    validator would refuse a whole batch the producer answers 202 with per-event `rejected`, and
    gzip bodies reach the Lambda as binary (`*/*`), which no JSON model can read."""
    import yaml

    spec = yaml.safe_load((REPO_ROOT / "producer-api" / "openapi.yaml").read_text())

    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)

    validators = [k for k in keys(spec) if str(k).startswith("x-amazon-apigateway-request-validator")]
    assert not validators, f"openapi.yaml declares {validators}: enforce them in api.tf and test that valid batches still pass"
    assert tf.default("rest_binary_media_types") == ["*/*"]
    header = tf.files["api.tf"].split("locals {")[0]
    assert "no x-amazon-apigateway-request-validator" in header
    assert not re.search(r"request validation[^.]*live", header, re.I), "api.tf must not claim request validation"


def test_route_throttles_name_routes_both_apis_serve(tf):
    """api_route_throttling's keys are checked against local.http_routes; the REST API takes its
    routes from openapi.yaml, so both lists must be the same or a REST method setting would name
    a method the API lacks (UpdateStage refuses it)."""
    import yaml

    spec = yaml.safe_load((REPO_ROOT / "producer-api" / "openapi.yaml").read_text())
    served = {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops
              if method in {"get", "post", "put", "delete", "patch", "options", "head"}}
    assert set(tf.locals["http_routes"]) == served
    defaults = tf.default("api_route_throttling")
    assert set(defaults) <= served and "POST /events" not in defaults, "POST /events keeps the stage's limits by default"
    assert defaults["GET /health"]["rate_limit"] < tf.default("api_throttling_rate_limit")
    method_path = expr(tf.locals["route_throttling"])
    assert 'trimprefix(split(" ", route)[1], "/")' in method_path and 'split(" ", route)[0]' in method_path


def test_gateway_answers_have_the_producer_error_body(tf):
    """API Gateway's own 4xx/5xx (x-gateway-responses in openapi.yaml) carry {"error": "..."} as JSON."""
    import json

    response = tf.resource("aws_api_gateway_gateway_response", "json_error")
    types = expr(attr(response, "for_each"))
    assert "DEFAULT_4XX" in types and "DEFAULT_5XX" in types
    # The parser keeps HCL's string escapes (\" for a quote); undo them to get the template text.
    template = attr(response, "response_templates")["application/json"].replace('\\"', '"')
    # What API Gateway renders: $context.error.messageString is the message as a JSON string.
    rendered = json.loads(template.replace("$context.error.messageString", json.dumps('Missing "Authentication" Token')))
    assert rendered == {"error": 'Missing "Authentication" Token'}
    assert attr(response, "response_parameters")["gatewayresponse.header.Content-Type"] == "'application/json'"
    deployment = expr(attr(tf.resource("aws_api_gateway_deployment", "producer"), "triggers"))
    assert "aws_api_gateway_gateway_response.json_error" in deployment, "a changed gateway response must redeploy"


def test_stage_throttling_and_access_logs(tf):
    stage = tf.resource("aws_api_gateway_stage", "producer")
    assert "aws_cloudwatch_log_group.api_access" in expr(attr(blocks(stage, "access_log_settings")[0], "destination_arn"))
    settings = blocks(tf.resource("aws_api_gateway_method_settings", "all"), "settings")[0]
    assert "var.api_throttling_rate_limit" in expr(attr(settings, "throttling_rate_limit"))
    assert "var.api_throttling_burst_limit" in expr(attr(settings, "throttling_burst_limit"))
    http = tf.resource("aws_apigatewayv2_stage", "producer")
    assert blocks(http, "access_log_settings") and blocks(http, "default_route_settings")
    permission = tf.resource("aws_lambda_permission", "api_invoke_producer")
    assert attr(permission, "principal") == "apigateway.amazonaws.com"
    assert attr(permission, "source_arn"), "permission must be limited to this API"


# --- Lake ---------------------------------------------------------------------------


def lake_schema() -> dict:
    return json.loads((REPO_ROOT / "schemas" / "lake_columns.json").read_text())


def glue_columns(tf) -> list[dict]:
    """The events table's columns: literal blocks, or the dynamic block over lake_columns.json."""
    sd = blocks(tf.resource("aws_glue_catalog_table", "events"), "storage_descriptor")[0]
    literal = [{"name": attr(c, "name"), "type": attr(c, "type")} for c in blocks(sd, "columns")]
    if literal:
        return literal
    dynamic = [d["columns"] for d in blocks(sd, "dynamic") if "columns" in d]
    assert len(dynamic) == 1, "no columns in the Glue table"
    for_each = expr(attr(dynamic[0], "for_each"))
    assert for_each == "${local.lake_schema.columns}", for_each
    assert 'file("${path.module}/../schemas/lake_columns.json")' in expr(tf.locals["lake_schema"])
    content = blocks(dynamic[0], "content")[0]
    assert attr(content, "name") == "${columns.value.name}"
    assert attr(content, "type") == "${columns.value.type}"
    return [{"name": c["name"], "type": c["type"]} for c in lake_schema()["columns"]]


def test_glue_columns_equal_lake_columns_json(tf):
    expected = [{"name": c["name"], "type": c["type"]} for c in lake_schema()["columns"]]
    assert glue_columns(tf) == expected
    hive_types = {"string", "timestamp", "boolean", "bigint", "int", "double", "date"}
    assert {c["type"] for c in expected} <= hive_types


def test_glue_partitions_use_projection_on_dt_and_hour(tf):
    table = tf.resource("aws_glue_catalog_table", "events")
    keys = [{"name": attr(k, "name"), "type": attr(k, "type")} for k in blocks(table, "partition_keys")]
    assert keys == [{"name": "dt", "type": "string"}, {"name": "hour", "type": "string"}]
    assert keys == lake_schema()["partition_keys"]
    params = attr(table, "parameters")
    assert params["projection.enabled"] == "true"
    assert params["projection.dt.type"] == "date"
    assert params["projection.dt.format"] == "yyyy-MM-dd"
    assert params["projection.hour.type"] == "integer"
    assert params["projection.hour.range"] == "0,23"
    assert params["projection.hour.digits"] == "2"
    template = params["storage.location.template"].replace("$${", "${")
    assert template.endswith("${local.lake_events_prefix}dt=${dt}/hour=${hour}/"), template
    sd = blocks(table, "storage_descriptor")[0]
    assert "ParquetHiveSerDe" in attr(blocks(sd, "ser_de_info")[0], "serialization_library")


def test_lake_bucket_is_private_versioned_encrypted_and_tls_only(tf):
    assert attr(blocks(tf.resource("aws_s3_bucket_versioning", "lake"), "versioning_configuration")[0], "status") == "Enabled"
    pab = tf.resource("aws_s3_bucket_public_access_block", "lake")
    assert all(attr(pab, k) is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"))
    sse = blocks(blocks(tf.resource("aws_s3_bucket_server_side_encryption_configuration", "lake"), "rule")[0], "apply_server_side_encryption_by_default")[0]
    assert attr(sse, "sse_algorithm") == "aws:kms"
    policy = tf.data["aws_iam_policy_document"]["lake_bucket"]
    denies = [st for st in blocks(policy, "statement") if attr(st, "effect") == "Deny"]
    assert any(attr(blocks(st, "condition")[0], "variable") == "aws:SecureTransport" for st in denies)
    rules = blocks(tf.resource("aws_s3_bucket_lifecycle_configuration", "lake"), "rule")
    dead_letter = [r for r in rules if "lake_dead_letter_prefix" in expr(attr(blocks(r, "filter")[0], "prefix", ""))]
    assert dead_letter and blocks(dead_letter[0], "expiration")
    assert any(blocks(r, "noncurrent_version_expiration") for r in rules)


def test_lake_retention_expires_events_and_bounds_the_projection(tf):
    rules = blocks(tf.resource("aws_s3_bucket_lifecycle_configuration", "lake"), "rule")
    events = [r for r in rules if "lake_events_prefix" in expr(attr(blocks(r, "filter")[0], "prefix", ""))]
    assert len(events) == 1, "one expiration rule for events/"
    assert "lake_retention_days" in expr(attr(blocks(events[0], "expiration")[0], "days"))
    assert "lake_retention_days" in expr(attr(events[0], "status")), "0 days disables it"
    var = tf.variables["lake_retention_days"]
    assert attr(var, "default") == 395 and blocks(var, "validation")
    assert "events_projection_range" in expr(attr(tf.resource("aws_glue_catalog_table", "events"), "parameters")["projection.dt.range"])
    assert "dead_letter_projection_range" in expr(
        attr(tf.resource("aws_glue_catalog_table", "dead_letter"), "parameters")["projection.dt.range"]
    )
    assert "NOW-${var.lake_retention_days}DAYS" in expr(tf.locals["events_projection_range"])
    assert "NOW-${var.dead_letter_retention_days}DAYS" in expr(tf.locals["dead_letter_projection_range"])


def test_athena_workgroup_is_v3_encrypted_and_capped(tf):
    wg = tf.resource("aws_athena_workgroup", "lake")
    conf = blocks(wg, "configuration")[0]
    assert attr(conf, "enforce_workgroup_configuration") is True
    assert "var.athena_bytes_scanned_cutoff" in expr(attr(conf, "bytes_scanned_cutoff_per_query"))
    assert attr(blocks(conf, "engine_version")[0], "selected_engine_version") == "Athena engine version 3"
    result = blocks(conf, "result_configuration")[0]
    assert "aws_s3_bucket.athena_results" in expr(attr(result, "output_location"))
    assert attr(blocks(result, "encryption_configuration")[0], "encryption_option") == "SSE_KMS"


# --- DynamoDB -------------------------------------------------------------------------


def test_dynamodb_table(tf):
    table = tf.resource("aws_dynamodb_table", "events")
    assert attr(table, "billing_mode") == "PAY_PER_REQUEST"
    assert attr(table, "hash_key") == "event_id"
    assert [(attr(a, "name"), attr(a, "type")) for a in blocks(table, "attribute")] == [("event_id", "S")]
    ttl = blocks(table, "ttl")[0]
    assert attr(ttl, "attribute_name") == "expires_at" and attr(ttl, "enabled") is True
    assert attr(blocks(table, "point_in_time_recovery")[0], "enabled") is True
    assert attr(blocks(table, "server_side_encryption")[0], "enabled") is True


# --- Observability host and alarms ------------------------------------------------------


def test_grafana_host_is_hardened(tf):
    host = tf.resource("aws_instance", "grafana")
    assert attr(blocks(host, "metadata_options")[0], "http_tokens") == "required"
    assert attr(blocks(host, "root_block_device")[0], "encrypted") is True
    assert "aws_iam_instance_profile.grafana" in expr(attr(host, "iam_instance_profile"))
    assert tf.default("grafana_instance_type") == "t4g.small"
    # Reachable only through SSM port forwarding: Grafana speaks plain HTTP, so no network may
    # reach the host at all (README "Reaching Grafana").
    to_grafana = [n for n, r in tf.resources["aws_vpc_security_group_ingress_rule"].items()
                  if "aws_security_group.grafana" in expr(attr(r, "security_group_id"))]
    assert not to_grafana, f"inbound rules on the Grafana host: {to_grafana}"
    assert not blocks(tf.resource("aws_security_group", "grafana"), "ingress")
    assert "allowed_cidr" not in tf.variables
    attachment = tf.resource("aws_iam_role_policy_attachment", "grafana_ssm")
    assert attr(attachment, "policy_arn").endswith("/AmazonSSMManagedInstanceCore")
    tunnel = tf.files["outputs.tf"].split('output "grafana_tunnel_command"')[1].split("\n}")[0]
    assert "AWS-StartPortForwardingSession" in tunnel and "portNumber=3000" in tunnel
    template = TF_DIR / "templates" / "grafana-user-data.sh.tftpl"
    text = template.read_text()
    assert "docker compose" in text and "docker-compose.yml" in text
    # Every ${...} in the template must be a templatefile variable (bash's are written $${...}).
    loop_vars = {v for m in re.findall(r"%\{\s*for\s+([a-z_, ]+)\s+in\b", text) for v in re.split(r"[,\s]+", m) if v}
    names = set(re.findall(r"(?<!\$)\$\{([a-z_]+)\}", text)) - loop_vars
    passed = set(re.findall(r"^\s{4}([a-z_]+)\s*=", tf.files["observability.tf"].split("templatefile(")[1].split("})")[0], re.M))
    assert names <= passed, f"template uses {sorted(names - passed)} which templatefile() does not pass"


GRAFANA_DIR = REPO_ROOT / "grafana"


def grafana_compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (checkov's dependency)")
    return yaml.safe_load((GRAFANA_DIR / "docker-compose.yml").read_text())


def grafana_uploaded(tf) -> set[str]:
    """The grafana/ files Terraform uploads for the host (local.grafana_compose_files, then
    local.grafana_files), computed here from the same filter and regex."""
    pattern = tf.locals["grafana_local_only"].replace("\\\\", "\\")
    files = {
        str(p.relative_to(GRAFANA_DIR)) for p in GRAFANA_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    compose_files = {f for f in files if not f.startswith(("tests/", "tools/")) and not f.endswith(".md")}
    assert "grafana_compose_files" in tf.files["observability.tf"] and 'startswith(f, "tests/")' in tf.files["observability.tf"]
    return {f for f in compose_files if not re.search(pattern, f)}


def test_grafana_host_runs_grafana_alone(tf):
    """The host's systemd unit starts the compose file's aws profile, which is Grafana and nothing
    it depends on: on AWS there is nothing for Prometheus to scrape or Promtail to tail."""
    text = (TF_DIR / "templates" / "grafana-user-data.sh.tftpl").read_text()
    start = re.search(r"^ExecStart=/usr/bin/docker compose (.*)$", text, re.M).group(1).split()
    stop = re.search(r"^ExecStop=/usr/bin/docker compose (.*)$", text, re.M).group(1).split()
    profiles = {start[i + 1] for i, a in enumerate(start) if a == "--profile"}
    assert profiles == {"aws"}, start
    up = start.index("up")
    named = [a for a in start[up + 1:] if not a.startswith("-")]
    assert stop[:2] == ["--profile", "aws"] and "down" in stop, "stop what was started"
    services = grafana_compose()["services"]
    todo = [n for n, svc in services.items() if profiles & set(svc.get("profiles") or profiles)] + named
    running: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in running:
            running.add(name)
            todo += list(services[name].get("depends_on") or [])
    assert running == {"grafana"}


def test_grafana_host_gets_only_what_grafana_uses(tf):
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (checkov's dependency)")
    uploaded = grafana_uploaded(tf)
    grafana = grafana_compose()["services"]["grafana"]
    # Everything the grafana service mounts from the repository is there.
    for volume in grafana["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            rel = source[2:]
            assert any(f == rel or f.startswith(rel + "/") for f in uploaded), f"{source} is not uploaded"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.replace("/etc/grafana/", "") in uploaded, f"home dashboard {home} is not uploaded"
    # Nothing that only the local profile's services read.
    for name, svc in grafana_compose()["services"].items():
        if name == "grafana":
            continue
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                rel = source[2:]
                assert not any(f == rel or f.startswith(rel + "/") for f in uploaded), f"{name}'s {source} is uploaded"
    # The datasources provisioned on the host: CloudWatch and the Site analytics database only.
    provisioned = {
        d["uid"]: d["type"]
        for f in sorted(uploaded) if f.startswith("provisioning/datasources/")
        for d in yaml.safe_load((GRAFANA_DIR / f).read_text()).get("datasources", [])
    }
    assert provisioned == {"cloudwatch": "cloudwatch", "analytics-postgres": "grafana-postgresql-datasource"}

    # Every dashboard goes up exactly when all the datasources it queries are provisioned there.
    def uids(node):
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and "uid" in ds and not str(ds["uid"]).startswith(("$", "-- ")):
                yield ds["uid"]
            for v in node.values():
                yield from uids(v)
        elif isinstance(node, list):
            for v in node:
                yield from uids(v)

    dashboards = sorted(p for p in (GRAFANA_DIR / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        used = set(uids(json.loads(path.read_text())))
        assert used, f"{path.name} queries no datasource"
        f = f"dashboards/{path.name}"
        assert (f in uploaded) == (used <= set(provisioned)), f"{f}: uses {sorted(used)}, uploaded: {f in uploaded}"
    assert {f"dashboards/{p.name}" for p in dashboards if p.name.endswith("-cloudwatch.json")} <= uploaded


# The calls Grafana's CloudWatch datasource makes (Grafana's documented IAM policy for it), and the
# resources each must be granted on: "*" where the action has no resource type, else the
# account's alarms, Contributor Insights rules or log groups (or "*").
GRAFANA_CLOUDWATCH_CALLS = {
    "cloudwatch:GetMetricData": "*",
    "cloudwatch:ListMetrics": "*",
    "cloudwatch:DescribeAlarmsForMetric": "*",
    "cloudwatch:DescribeAlarms": ":alarm:*",
    "cloudwatch:DescribeAlarmHistory": ":alarm:*",
    "cloudwatch:GetInsightRuleReport": ":insight-rule/*",
    "logs:DescribeLogGroups": "*",
    "logs:GetLogGroupFields": ":log-group:*",
    "logs:StartQuery": ":log-group:*",
    "logs:GetQueryResults": ":log-group:*",
    "logs:StopQuery": "*",
    "logs:GetLogEvents": ":log-group:*",
    "ec2:DescribeRegions": "*",
    "ec2:DescribeInstances": "*",
    "ec2:DescribeTags": "*",
    "tag:GetResources": "*",
    "oam:ListSinks": "*",
}


def test_grafana_role_can_make_the_cloudwatch_datasource_calls(tf):
    doc = tf.data["aws_iam_policy_document"]["grafana"]
    granted: dict[str, list[str]] = {}
    for st in blocks(doc, "statement"):
        assert attr(st, "effect", "Allow") == "Allow"
        for action in attr(st, "actions"):
            granted.setdefault(action, []).extend(expr(r) for r in attr(st, "resources"))
    for action, scope in GRAFANA_CLOUDWATCH_CALLS.items():
        resources = granted.get(action, [])
        assert resources, f"the Grafana role lacks {action}"
        if scope == "*":
            assert "*" in resources, f"{action} has no resource type: grant it on *, not {resources}"
        else:
            assert any(r == "*" or (r.endswith(scope) and "${local.account_id}" in r) for r in resources), (action, resources)
    # Reading only: nothing on CloudWatch, Logs or EC2 that writes.
    read = re.compile(r"^(cloudwatch|logs|ec2|tag|oam):(Get|List|Describe|StartQuery$|StopQuery$|FilterLogEvents$)")
    for action in granted:
        if action.split(":")[0] in {"cloudwatch", "logs", "ec2", "tag", "oam"}:
            assert read.match(action), f"the Grafana role may {action}"


def test_alarms_notify_the_encrypted_topic(tf):
    """What each alarm reads is tests/test_alarms.py's; here, that every one of them (a new one
    too, which alarms.tftest.hcl would not list) notifies the topic, and that the topic is
    encrypted with the stack's key."""
    alarms = tf.resources["aws_cloudwatch_metric_alarm"]
    assert alarms
    for name, alarm in alarms.items():
        assert "local.alarm_actions" in expr(attr(alarm, "alarm_actions")), name
    topic = tf.resource("aws_sns_topic", "alarms")
    assert "aws_kms_key.main" in expr(attr(topic, "kms_master_key_id"))


def test_outputs(tf):
    outputs = set(re.findall(r'^output "([a-z_]+)"', tf.files["outputs.tf"], re.M))
    required = {"api_url", "grafana_url", "stream_name", "lake_bucket", "glue_table", "athena_workgroup",
                "dynamodb_table", "rds_endpoint", "db_secret_arn"}
    assert required <= outputs, sorted(required - outputs)


# --- Hygiene ----------------------------------------------------------------------------


def test_every_checkov_skip_is_inline_with_a_reason():
    skip = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")
    found = 0
    for path in sorted(TF_DIR.glob("*.tf")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            m = skip.search(line)
            if m:
                found += 1
                assert re.fullmatch(r"CKV2?_(AWS|SECRET)_\d+", m.group(1)), f"{path.name}:{lineno}: bad id"
                assert m.group(2) and len(m.group(2).strip()) >= 30, f"{path.name}:{lineno}: skip needs a real reason"
    assert found, "expected the documented inline skips"
    config = (TF_DIR / ".checkov.yaml").read_text()
    assert "skip-check" not in config, "no global skips: suppress inline, next to the resource"


def test_readme_documents_every_variable(tf):
    readme = (TF_DIR / "README.md").read_text()
    missing = [name for name in tf.variables if f"`{name}`" not in readme]
    assert not missing, f"README.md variables table lacks {missing}"


# --- Compactor (compactor.tf) -------------------------------------------------------------


def test_compactor_runs_hourly_on_closed_hours(tf):
    rule = tf.resource("aws_cloudwatch_event_rule", "compactor")
    assert expr(attr(rule, "schedule_expression")) == "${local.compactor_schedule_expression}"
    # Every hour, at a minute after the consumer's grace period (CLOSE_GRACE_MINUTES = 10).
    m = re.fullmatch(r"cron\((\d+) \* \* \* \? \*\)", tf.locals["compactor_schedule_expression"])
    assert m and 10 < int(m.group(1)) < 60, tf.locals["compactor_schedule_expression"]
    target = tf.resource("aws_cloudwatch_event_target", "compactor")
    assert "aws_cloudwatch_event_rule.compactor.name" in expr(attr(target, "rule"))
    assert "aws_lambda_function.compactor.arn" in expr(attr(target, "arn"))
    assert "hours_back" in expr(attr(target, "input")) and tf.locals["compactor_hours_back"] >= 24
    permission = tf.resource("aws_lambda_permission", "events_invoke_compactor")
    assert attr(permission, "principal") == "events.amazonaws.com"
    assert "aws_cloudwatch_event_rule.compactor.arn" in expr(attr(permission, "source_arn"))
    retries = tf.resource("aws_lambda_function_event_invoke_config", "compactor")
    assert attr(retries, "maximum_retry_attempts") == 0, "the schedule is the retry"


def test_compactor_lambda_conventions(tf):
    fn = tf.resource("aws_lambda_function", "compactor")
    assert attr(fn, "runtime") == "provided.al2023" and attr(fn, "handler") == "bootstrap"
    assert "var.lambda_architecture" in expr(attr(fn, "architectures"))
    assert "var.compactor_zip" in tf.locals["compactor_zip"]
    assert tf.default("compactor_zip") == "../target/lambda/compactor/bootstrap.zip"
    assert "filebase64sha256" in expr(attr(fn, "source_code_hash"))
    assert attr(fn, "reserved_concurrent_executions") == 1, "one compactor at a time"
    assert attr(blocks(fn, "tracing_config")[0], "mode") == "Active"
    assert "aws_kms_key.main" in expr(attr(fn, "kms_key_arn"))
    vpc = blocks(fn, "vpc_config")[0]
    assert "aws_subnet.private" in expr(attr(vpc, "subnet_ids"))
    assert "aws_security_group.consumer" in expr(attr(vpc, "security_group_ids"))
    assert "aws_kms_key.main" in expr(attr(tf.resource("aws_cloudwatch_log_group", "compactor"), "kms_key_id"))
    alarm = tf.resource("aws_cloudwatch_metric_alarm", "compactor_errors")
    assert attr(alarm, "metric_name") == "Errors" and "aws_lambda_function.compactor" in expr(attr(alarm, "dimensions"))


def test_compactor_environment_is_documented_and_minimal(tf):
    env = lambda_environment(tf, "compactor")
    assert set(env) <= CONSUMER_ENV, sorted(set(env) - CONSUMER_ENV)
    assert {"LAKE_BUCKET", "DATABASE_SECRET_ARN", "DATABASE_HOST"} <= set(env)
    assert not {"DYNAMODB_TABLE", "STREAM_NAME"} & set(env), "the compactor touches neither DynamoDB nor Kinesis"
    text = (REPO_ROOT / "README.md").read_text()
    for name in env:
        assert re.search(rf"\b{name}\b", text), f"{name} not in the README's configuration table"


def test_compactor_role_is_scoped_to_the_events_prefix(tf):
    doc = tf.data["aws_iam_policy_document"]["compactor"]
    statements = {attr(st, "sid"): st for st in blocks(doc, "statement")}
    actions = set()
    for sid, st in statements.items():
        assert attr(st, "effect", "Allow") == "Allow", sid
        resources = [expr(r) for r in attr(st, "resources")]
        assert resources and "*" not in resources, f"{sid}: wildcard resource"
        actions |= set(attr(st, "actions"))
    assert actions == {
        "logs:CreateLogStream", "logs:PutLogEvents",
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket",
        "secretsmanager:GetSecretValue",
        "kms:Decrypt", "kms:GenerateDataKey",
    }, sorted(actions)
    objects = statements["RewriteEventObjects"]
    assert set(attr(objects, "actions")) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert [expr(r) for r in attr(objects, "resources")] == ["${aws_s3_bucket.lake.arn}/${local.lake_events_prefix}*"]
    listing = statements["ListEventPartitions"]
    assert [expr(r) for r in attr(listing, "resources")] == ["${aws_s3_bucket.lake.arn}"]
    condition = blocks(listing, "condition")[0]
    assert attr(condition, "test") == "StringLike" and attr(condition, "variable") == "s3:prefix"
    assert attr(condition, "values") == ["${local.lake_events_prefix}*"]
    # The application's login only: never the master secret.
    assert [expr(r) for r in attr(statements["ReadDatabaseSecret"], "resources")] == ["${local.db_app_secret_arn}"]
    assert [expr(r) for r in attr(statements["UseDataKey"], "resources")] == ["${aws_kms_key.main.arn}"]
    assert "aws_cloudwatch_log_group.compactor.arn" in expr(attr(statements["WriteOwnLogs"], "resources"))
    attachments = {
        attr(body, "policy_arn").rsplit("/", 1)[-1]
        for body in tf.resources["aws_iam_role_policy_attachment"].values()
        if "aws_iam_role.compactor" in expr(attr(body, "role"))
    }
    assert attachments == {"AWSLambdaENIManagementAccess", "AWSXRayDaemonWriteAccess"}, attachments


def test_dead_letter_table_matches_the_athena_ddl(tf):
    table = tf.resource("aws_glue_catalog_table", "dead_letter")
    keys = [{"name": attr(k, "name"), "type": attr(k, "type")} for k in blocks(table, "partition_keys")]
    assert keys == [{"name": "dt", "type": "string"}, {"name": "hour", "type": "string"}]
    params = attr(table, "parameters")
    assert params["projection.enabled"] == "true" and params["projection.dt.format"] == "yyyy-MM-dd"
    template = params["storage.location.template"].replace("$${", "${")
    assert template.endswith("${local.lake_dead_letter_prefix}dt=${dt}/hour=${hour}/"), template
    sd = blocks(table, "storage_descriptor")[0]
    assert attr(blocks(sd, "ser_de_info")[0], "serialization_library") == "org.openx.data.jsonserde.JsonSerDe"
    dynamic = [d["columns"] for d in blocks(sd, "dynamic") if "columns" in d][0]
    columns = [tuple(c) for c in attr(dynamic, "for_each")]
    ddl = (REPO_ROOT / "athena" / "ddl" / "dead_letter.sql").read_text()
    ddl_columns = re.findall(r"^\s+([a-z_0-9]+)\s+([a-z]+),?$", ddl.split("PARTITIONED BY")[0], re.M)
    assert columns == ddl_columns, (columns, ddl_columns)


# --- Forget (forget.tf; dynamodb.tf's table, which it reads and deletes by key) ------------------


def test_events_table_has_no_secondary_index(tf):
    """forget gets a visitor's event IDs from the lake rows it rewrites and deletes the items by
    key: no index (each one would add a write unit per event, bench/RESULTS.md "#23: DynamoDB
    indexes for erasure"), only event_id declared, and bootstrap_resources.py makes none locally."""
    table = tf.resource("aws_dynamodb_table", "events")
    assert attr(table, "hash_key") == "event_id" and attr(table, "range_key") is None
    assert [(attr(a, "name"), attr(a, "type")) for a in blocks(table, "attribute")] == [("event_id", "S")]
    assert "dynamic" not in table, "no generated attribute or index blocks"
    assert "global_secondary_index" not in table and "local_secondary_index" not in table
    assert "dynamodb_erasure_indexes" not in tf.locals
    bootstrap = (REPO_ROOT / "scripts" / "bootstrap_resources.py").read_text()
    assert "GlobalSecondaryIndexes" not in bootstrap and "ERASURE_INDEXES" not in bootstrap


def test_forget_lambda_conventions(tf):
    fn = tf.resource("aws_lambda_function", "forget")
    assert "var.forget_zip" in tf.locals["forget_zip"]
    assert attr(fn, "reserved_concurrent_executions") == 1, "one forget run at a time"
    assert "aws_kms_key.main" in expr(attr(fn, "kms_key_arn"))
    vpc = blocks(fn, "vpc_config")[0]
    assert "aws_subnet.private" in expr(attr(vpc, "subnet_ids"))
    assert "aws_security_group.consumer" in expr(attr(vpc, "security_group_ids"))
    assert "aws_kms_key.main" in expr(attr(tf.resource("aws_cloudwatch_log_group", "forget"), "kms_key_id"))
    assert "var.log_retention_days" in expr(attr(tf.resource("aws_cloudwatch_log_group", "forget"), "retention_in_days"))
    alarm = tf.resource("aws_cloudwatch_metric_alarm", "forget_errors")
    assert attr(alarm, "metric_name") == "Errors" and "aws_lambda_function.forget" in expr(attr(alarm, "dimensions"))
    packaged = (REPO_ROOT / "scripts" / "package.sh").read_text()
    assert '"forget|-p lake-tools --bin forget|yes"' in packaged, "make package builds forget's zip with the CA bundle"


def test_forget_runs_on_its_schedule_with_an_empty_payload(tf):
    rule = tf.resource("aws_cloudwatch_event_rule", "forget")
    assert expr(attr(rule, "schedule_expression")) == "${var.forget_schedule_expression}"
    assert re.fullmatch(r"cron\(\d+ \d+ \* \* \? \*\)", tf.default("forget_schedule_expression")), "daily by default"
    target = tf.resource("aws_cloudwatch_event_target", "forget")
    assert "aws_lambda_function.forget.arn" in expr(attr(target, "arn"))
    # A scheduled run files nothing: {"request": ...} is only ever an operator's invocation.
    assert expr(attr(target, "input")) == "${jsonencode({})}"
    permission = tf.resource("aws_lambda_permission", "events_invoke_forget")
    assert attr(permission, "principal") == "events.amazonaws.com"
    assert "aws_cloudwatch_event_rule.forget.arn" in expr(attr(permission, "source_arn"))
    retries = tf.resource("aws_lambda_function_event_invoke_config", "forget")
    assert attr(retries, "maximum_retry_attempts") == 0, "the schedule is the retry"


def test_forget_environment_is_documented_and_minimal(tf):
    env = lambda_environment(tf, "forget")
    assert set(env) <= CONSUMER_ENV, sorted(set(env) - CONSUMER_ENV)
    assert {"LAKE_BUCKET", "DYNAMODB_TABLE", "DATABASE_SECRET_ARN", "DATABASE_HOST"} <= set(env)
    assert "STREAM_NAME" not in env, "forget does not read the stream"
    assert "DATABASE_MIGRATOR_SECRET_ARN" not in env, "only the consumer migrates"
    assert env["DATABASE_SECRET_ARN"] == "${local.db_app_secret_arn}"
    text = (REPO_ROOT / "README.md").read_text()
    for name in env:
        assert re.search(rf"\b{name}\b", text), f"{name} not in the README's configuration table"


def test_forget_role_reads_and_deletes_items_by_key_only(tf):
    doc = tf.data["aws_iam_policy_document"]["forget"]
    statements = {attr(st, "sid"): st for st in blocks(doc, "statement")}
    actions = set()
    for sid, st in statements.items():
        assert attr(st, "effect", "Allow") == "Allow", sid
        resources = [expr(r) for r in attr(st, "resources")]
        assert resources and "*" not in resources, f"{sid}: wildcard resource"
        actions |= set(attr(st, "actions"))
    assert actions == {
        "logs:CreateLogStream", "logs:PutLogEvents",
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket",
        "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem",
        "secretsmanager:GetSecretValue",
        "kms:Decrypt", "kms:GenerateDataKey",
    }, sorted(actions)
    # By key only (the event IDs of the visitor's lake rows): no Scan, no Query, no index.
    find = statements["FindVisitorItems"]
    assert attr(find, "actions") == ["dynamodb:BatchGetItem"]
    assert [expr(r) for r in attr(find, "resources")] == ["${aws_dynamodb_table.events.arn}"]
    delete = statements["DeleteVisitorItems"]
    assert set(attr(delete, "actions")) == {"dynamodb:BatchWriteItem", "dynamodb:DeleteItem"}
    assert [expr(r) for r in attr(delete, "resources")] == ["${aws_dynamodb_table.events.arn}"]
    objects = statements["RewriteEventObjects"]
    assert [expr(r) for r in attr(objects, "resources")] == ["${aws_s3_bucket.lake.arn}/${local.lake_events_prefix}*"]
    condition = blocks(statements["ListEventPartitions"], "condition")[0]
    assert attr(condition, "variable") == "s3:prefix" and attr(condition, "values") == ["${local.lake_events_prefix}*"]
    assert [expr(r) for r in attr(statements["ReadDatabaseSecret"], "resources")] == ["${local.db_app_secret_arn}"]
    assert "aws_cloudwatch_log_group.forget.arn" in expr(attr(statements["WriteOwnLogs"], "resources"))
    attachments = {
        attr(body, "policy_arn").rsplit("/", 1)[-1]
        for body in tf.resources["aws_iam_role_policy_attachment"].values()
        if "aws_iam_role.forget" in expr(attr(body, "role"))
    }
    assert attachments == {"AWSLambdaENIManagementAccess", "AWSXRayDaemonWriteAccess"}, attachments
