# Erasure of one visitor everywhere (issue #23): a Rust Lambda (lake-tools' `forget` binary) that
# processes every pending erasure request recorded in PostgreSQL (table erasure_requests): each
# lake object holding a row of the visitor is rewritten without those rows and swapped in with
# the compactor's crash-safe protocol, and the DynamoDB items of those rows' events are deleted
# by key (the table has no index; dynamodb.tf). Each invocation processes what is
# pending; an invocation whose payload is {"request": {"site": ..., "anonymous_id" | "user_id": ...}}
# records that request first. An EventBridge rule runs it on var.forget_schedule_expression
# (daily by default), so requests recorded while a run failed, and events of a forgotten visitor
# that were still in the stream when it ran, are handled by the next one.
# terraform/README.md, "Erasure (forget)", is the operator's side.
#
# Artifact: `make package` builds it (`cargo lambda build -p lake-tools --bin forget`, with the
# RDS CA bundle) into ../target/lambda/forget/bootstrap.zip, var.forget_zip's default.

locals {
  forget_function_name = "${var.name}-forget"
  forget_zip           = startswith(var.forget_zip, "/") ? var.forget_zip : "${path.module}/${var.forget_zip}"
  # A rewrite holds one lake object and its rewritten copy in memory; compacted hour files are
  # the largest objects (bench/RESULTS.md, "Compaction"), so forget gets the compactor's memory.
  forget_memory_mb = 3008
  # A run cut short is safe: the next run resumes the requests it left pending.
  forget_timeout_seconds = 900

  # Names from the README configuration table: the compactor's, plus the DynamoDB table.
  forget_environment = {
    LAKE_BUCKET            = aws_s3_bucket.lake.id
    DYNAMODB_TABLE         = aws_dynamodb_table.events.name
    DATABASE_SECRET_ARN    = local.db_app_secret_arn
    DATABASE_HOST          = var.enable_rds_proxy ? aws_db_proxy.postgres[0].endpoint : aws_db_instance.postgres.address
    DATABASE_PORT          = tostring(aws_db_instance.postgres.port)
    DATABASE_NAME          = var.rds_database_name
    DATABASE_SSL_ROOT_CERT = var.database_ssl_root_cert
    LOG_FORMAT             = "json"
    RUST_LOG               = var.rust_log
  }
}

resource "aws_cloudwatch_log_group" "forget" {
  name              = "/aws/lambda/${local.forget_function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# --- Execution role: the events/ prefix, the visitor's DynamoDB items, the DB secret, its logs ---

resource "aws_iam_role" "forget" {
  name               = "${local.forget_function_name}-lambda"
  description        = "forget: erase one visitor's rows from the lake's events/ prefix and DynamoDB"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "forget" {
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.forget.arn}:*"]
  }

  # Read an object holding a visitor's rows, write its rewrite, delete the original: events/
  # only, never dead-letter/ or anything else in the bucket.
  statement {
    sid       = "RewriteEventObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.lake.arn}/${local.lake_events_prefix}*"]
  }

  # ListBucket also lets HeadObject on a missing key (a swap a crash interrupted) answer 404
  # instead of 403; a listing that names a prefix must name events/.
  statement {
    sid       = "ListEventPartitions"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]

    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["${local.lake_events_prefix}*"]
    }
  }

  # Count which of the visitor's events (IDs from its lake rows) still have an item: by key
  # only, never a Scan or Query of the table.
  statement {
    sid       = "FindVisitorItems"
    actions   = ["dynamodb:BatchGetItem"]
    resources = [aws_dynamodb_table.events.arn]
  }

  # Delete them. No PutItem or UpdateItem: BatchWriteItem is used for its DeleteRequests (IAM
  # cannot tell a batch's deletes from its puts).
  statement {
    sid       = "DeleteVisitorItems"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.events.arn]
  }

  statement {
    sid       = "ReadDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.db_app_secret_arn]
  }

  statement {
    sid = "UseDataKey"
    # Decrypt: SSE-KMS lake objects read back, the DB secret, the environment variables.
    # GenerateDataKey: SSE-KMS writes of rewritten objects. (DynamoDB decrypts the table with
    # its own grant on the key.)
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "forget" {
  name   = "forget"
  role   = aws_iam_role.forget.id
  policy = data.aws_iam_policy_document.forget.json
}

# Create/describe/delete the function's ENIs in the private subnets (AWS managed, ENI actions only).
resource "aws_iam_role_policy_attachment" "forget_vpc" {
  role       = aws_iam_role.forget.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaENIManagementAccess"
}

resource "aws_iam_role_policy_attachment" "forget_xray" {
  role       = aws_iam_role.forget.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

# --- Function -------------------------------------------------------------------

resource "aws_lambda_function" "forget" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously by an operator (aws lambda invoke) or by the schedule; a failed run needs no replay because its requests stay pending in PostgreSQL and the next run resumes them. Failures raise the forget Errors alarm below.
  #checkov:skip=CKV_AWS_272:Artifacts are built from the repository by `make package`; there is no AWS Signer profile in this stack. Add one with aws_lambda_code_signing_config if artifacts come from elsewhere.
  function_name = local.forget_function_name
  description   = "Erase visitors on request: DynamoDB items and lake rows (pending erasure requests)"
  role          = aws_iam_role.forget.arn

  filename         = local.forget_zip
  source_code_hash = filebase64sha256(local.forget_zip)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]

  memory_size = local.forget_memory_mb
  timeout     = local.forget_timeout_seconds
  # One run at a time: a request filed while the scheduled run works waits for the next
  # invocation (or is answered 429 TooManyRequests: invoke again). Runs are safe to overlap in
  # PostgreSQL's eyes; this keeps two from rewriting the same objects at once for nothing.
  reserved_concurrent_executions = 1
  kms_key_arn                    = aws_kms_key.main.arn

  # Same network position and needs as the compactor (S3 and DynamoDB gateway endpoints, the
  # Secrets Manager endpoint, PostgreSQL): it shares the consumer's security group, which RDS
  # admits and whose egress reaches exactly those.
  vpc_config {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.consumer.id]
  }

  environment {
    variables = { for k, v in local.forget_environment : k => v if v != "" }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.forget,
    aws_iam_role_policy.forget,
    aws_iam_role_policy_attachment.forget_vpc,
  ]
}

# The schedule is the retry: no asynchronous retries that could overlap the next run.
resource "aws_lambda_function_event_invoke_config" "forget" {
  function_name                = aws_lambda_function.forget.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 3600
}

# --- Schedule -----------------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "forget" {
  name                = local.forget_function_name
  description         = "Process pending erasure requests (forget)"
  schedule_expression = var.forget_schedule_expression
}

# An empty payload: process what is pending, record nothing new.
resource "aws_cloudwatch_event_target" "forget" {
  rule  = aws_cloudwatch_event_rule.forget.name
  arn   = aws_lambda_function.forget.arn
  input = jsonencode({})
}

resource "aws_lambda_permission" "events_invoke_forget" {
  statement_id  = "AllowScheduleRule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.forget.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.forget.arn
}

resource "aws_cloudwatch_metric_alarm" "forget_errors" {
  alarm_name          = "${var.name}-forget-errors"
  alarm_description   = "An erasure run failed (forget exits with an error when any request could not be completed; they stay pending and the next run resumes them). Its log says what failed."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.forget.function_name }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  # notBreaching: unlike the hourly compactor, forget runs once a day (var.forget_schedule_expression)
  # and on demand, so most hours have no datapoint at all and that says nothing; a run that
  # failed reports Errors and alarms. A schedule that stopped is not caught here (requests then
  # wait): the audit (`forget status`, completed_at) shows it.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
}

output "forget_function_name" {
  description = "The forget Lambda: invoke it with {\"request\": {\"site\": ..., \"anonymous_id\" | \"user_id\": ...}} to file an erasure request and process it (terraform/README.md, \"Erasure (forget)\")."
  value       = aws_lambda_function.forget.function_name
}
