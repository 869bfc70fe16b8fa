# The lake compactor: a Rust Lambda (lake-tools' `compactor` binary) run hourly by an
# EventBridge rule. It rewrites each closed hour's micro-batch Parquet files under events/ into a
# few large sorted files and marks the inputs in PostgreSQL (athena/README.md, "Compaction").
# Also the Glue table over dead-letter/ (NDJSON), which the example queries in athena/ use.
#
# Artifact: `make package` builds it (`cargo lambda build -p lake-tools --bin compactor`, with the
# RDS CA bundle) into ../target/lambda/compactor/bootstrap.zip, var.compactor_zip's default.

# Tuning lives in locals, not variables, until someone needs to change it per deployment (a
# variable also needs a row in terraform/README.md).
locals {
  compactor_function_name = "${var.name}-compactor"
  compactor_zip           = startswith(var.compactor_zip, "/") ? var.compactor_zip : "${path.module}/${var.compactor_zip}"
  # A full chunk (256 MiB of input) needs about 1.1 GB (bench/RESULTS.md, "Compaction");
  # the headroom also buys CPU, which Lambda scales with memory.
  compactor_memory_mb = 3008
  # A run cut short is safe: the next run finishes it.
  compactor_timeout_seconds = 900
  # Minute 15: an hour is compacted once it ended more than 10 minutes ago (CLOSE_GRACE_MINUTES).
  compactor_schedule_expression = "cron(15 * * * ? *)"
  # Closed hours each run examines, so stragglers a lagging consumer writes into older hours are
  # merged too; Kinesis keeps records 24 h.
  compactor_hours_back = 24

  # Names from the README configuration table; the compactor needs the lake and PostgreSQL only.
  compactor_environment = {
    LAKE_BUCKET            = aws_s3_bucket.lake.id
    DATABASE_SECRET_ARN    = local.db_app_secret_arn
    DATABASE_HOST          = var.enable_rds_proxy ? aws_db_proxy.postgres[0].endpoint : aws_db_instance.postgres.address
    DATABASE_PORT          = tostring(aws_db_instance.postgres.port)
    DATABASE_NAME          = var.rds_database_name
    DATABASE_SSL_ROOT_CERT = var.database_ssl_root_cert
    LOG_FORMAT             = "json"
    RUST_LOG               = var.rust_log
  }
}

resource "aws_cloudwatch_log_group" "compactor" {
  name              = "/aws/lambda/${local.compactor_function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# --- Execution role: the events/ prefix, the DB secret, its logs ---------------------

resource "aws_iam_role" "compactor" {
  name               = "${local.compactor_function_name}-lambda"
  description        = "compactor: rewrite closed hours of the lake's events/ prefix"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "compactor" {
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.compactor.arn}:*"]
  }

  # Read micro-batch files, write compacted ones, delete the inputs: events/ only, never
  # dead-letter/ or anything else in the bucket.
  statement {
    sid       = "RewriteEventObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.lake.arn}/${local.lake_events_prefix}*"]
  }

  # It lists one hour partition at a time, always with a prefix under events/.
  statement {
    sid       = "ListEventPartitions"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.lake_events_prefix}*"]
    }
  }

  statement {
    sid       = "ReadDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.db_app_secret_arn]
  }

  statement {
    sid = "UseDataKey"
    # Decrypt: SSE-KMS lake objects read back, the DB secret, the environment variables.
    # GenerateDataKey: SSE-KMS writes of compacted files.
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "compactor" {
  name   = "compactor"
  role   = aws_iam_role.compactor.id
  policy = data.aws_iam_policy_document.compactor.json
}

# Create/describe/delete the function's ENIs in the private subnets (AWS managed, ENI actions only).
resource "aws_iam_role_policy_attachment" "compactor_vpc" {
  role       = aws_iam_role.compactor.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaENIManagementAccess"
}

resource "aws_iam_role_policy_attachment" "compactor_xray" {
  role       = aws_iam_role.compactor.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

# --- Function -------------------------------------------------------------------

resource "aws_lambda_function" "compactor" {
  #checkov:skip=CKV_AWS_116:Invoked hourly by EventBridge; a failed run needs no replay because the next run re-examines the last local.compactor_hours_back hours and finishes it. Failures raise the compactor Errors alarm below.
  #checkov:skip=CKV_AWS_272:Artifacts are built from the repository by `make package`; there is no AWS Signer profile in this stack. Add one with aws_lambda_code_signing_config if artifacts come from elsewhere.
  function_name = local.compactor_function_name
  description   = "Hourly: compact closed hours of the S3 Parquet lake"
  role          = aws_iam_role.compactor.arn

  filename         = local.compactor_zip
  source_code_hash = filebase64sha256(local.compactor_zip)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]

  memory_size = local.compactor_memory_mb
  timeout     = local.compactor_timeout_seconds
  # One run at a time. A PostgreSQL advisory lock per hour already makes overlapping runs
  # harmless; this keeps them from costing anything.
  reserved_concurrent_executions = 1
  kms_key_arn                    = aws_kms_key.main.arn

  # Same network position and needs as the consumer (S3 gateway endpoint, Secrets Manager
  # endpoint, PostgreSQL), so it shares the consumer's security group, which RDS admits.
  vpc_config {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.consumer.id]
  }

  environment {
    variables = { for k, v in local.compactor_environment : k => v if v != "" }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.compactor,
    aws_iam_role_policy.compactor,
    aws_iam_role_policy_attachment.compactor_vpc,
  ]
}

# The schedule is the retry: no asynchronous retries that could overlap the next run.
resource "aws_lambda_function_event_invoke_config" "compactor" {
  function_name                = aws_lambda_function.compactor.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 3600
}

# --- Hourly schedule --------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "compactor" {
  name                = local.compactor_function_name
  description         = "Run the lake compactor every hour"
  schedule_expression = local.compactor_schedule_expression
}

resource "aws_cloudwatch_event_target" "compactor" {
  rule  = aws_cloudwatch_event_rule.compactor.name
  arn   = aws_lambda_function.compactor.arn
  input = jsonencode({ hours_back = local.compactor_hours_back })
}

resource "aws_lambda_permission" "events_invoke_compactor" {
  statement_id  = "AllowHourlyRule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.compactor.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.compactor.arn
}

resource "aws_cloudwatch_metric_alarm" "compactor_errors" {
  alarm_name          = "${var.name}-compactor-errors"
  alarm_description   = "The lake compactor failed, or did not run, in the last hour (hour partitions left uncompacted; the next run retries them)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.compactor.function_name }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  # Breaching: the hourly rule invokes the compactor whatever the traffic, and Lambda reports
  # Errors (0 on success) for every invocation, so hours without a datapoint mean it did not run
  # (rule disabled, function deleted or unable to start).
  treat_missing_data = "breaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
}

# --- Dead-letter table ------------------------------------------------------------

# Quarantined records (NDJSON, one object per batch) for the example query
# athena/queries/08_dead_letter_reasons.sql; same columns as athena/ddl/dead_letter.sql.
resource "aws_glue_catalog_table" "dead_letter" {
  name          = "dead_letter"
  database_name = aws_glue_catalog_database.lake.name
  description   = "Records the consumer could not decode, NDJSON, one partition per quarantine hour"
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL                      = "TRUE"
    classification                = "json"
    "projection.enabled"          = "true"
    "projection.dt.type"          = "date"
    "projection.dt.range"         = local.dead_letter_projection_range
    "projection.dt.format"        = "yyyy-MM-dd"
    "projection.dt.interval"      = "1"
    "projection.dt.interval.unit" = "DAYS"
    "projection.hour.type"        = "integer"
    "projection.hour.range"       = "0,23"
    "projection.hour.digits"      = "2"
    "storage.location.template"   = "s3://${aws_s3_bucket.lake.id}/${local.lake_dead_letter_prefix}dt=$${dt}/hour=$${hour}/"
  }

  partition_keys {
    name    = "dt"
    type    = "string"
    comment = "quarantine date, UTC, yyyy-MM-dd"
  }

  partition_keys {
    name    = "hour"
    type    = "string"
    comment = "quarantine hour, UTC, 00-23"
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.lake.id}/${local.lake_dead_letter_prefix}"
    input_format  = "org.apache.hadoop.mapred.TextInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"

    ser_de_info {
      name                  = "json"
      serialization_library = "org.openx.data.jsonserde.JsonSerDe"
    }

    # line: the bad event's line in its packed record (NULL in rows from before packing).
    dynamic "columns" {
      for_each = [["reason_code", "string"], ["reason", "string"], ["shard_id", "string"], ["sequence_number", "string"],
      ["line", "int"], ["approximate_arrival", "string"], ["payload_base64", "string"]]
      content {
        name = columns.value[0]
        type = columns.value[1]
      }
    }
  }
}

output "compactor_function_name" {
  description = "The hourly lake compactor Lambda."
  value       = aws_lambda_function.compactor.function_name
}
