# The two Rust Lambdas (runtime provided.al2023, handler "bootstrap"), their log groups and
# least-privilege execution roles.
#
# Artifacts: `make package` (scripts/package.sh) builds ../target/lambda/<function>/bootstrap.zip
# with cargo-lambda for ARCH=arm64 (default when the Rust target is installed) or x86_64;
# lambda_architecture must name the same architecture. The consumer's and the compactor's zips
# also hold the RDS CA bundle (/var/task/global-bundle.pem, var.database_ssl_root_cert).

locals {
  producer_zip = startswith(var.producer_zip, "/") ? var.producer_zip : "${path.module}/${var.producer_zip}"
  consumer_zip = startswith(var.consumer_zip, "/") ? var.consumer_zip : "${path.module}/${var.consumer_zip}"

  # Environment variable names are the ones in the repository's contract (README configuration table).
  producer_environment = {
    STREAM_NAME = aws_kinesis_stream.events.name
    # The sites file's text (producer-api/src/sites.rs): keys, origins (they drive CORS), limits.
    SITES_JSON        = jsonencode({ sites = var.sites })
    DEFAULT_SITE_KEY  = var.default_site_key
    PUBLISH_BUDGET_MS = tostring(var.publish_budget_ms)
    LOG_FORMAT        = "json"
    RUST_LOG          = var.rust_log
    # The country database scripts/package.sh puts in the zip (DB-IP, CC BY 4.0); a zip packaged
    # without it (PACKAGE_GEOIP=0) starts with the lookup off and says so in its log.
    GEOIP_COUNTRY_DB = "/var/task/country.mmdb"
  }

  consumer_environment = {
    LAKE_BUCKET                  = aws_s3_bucket.lake.id
    DYNAMODB_TABLE               = aws_dynamodb_table.events.name
    DATABASE_SECRET_ARN          = local.db_app_secret_arn
    DATABASE_MIGRATOR_SECRET_ARN = local.db_secret_arn
    DATABASE_HOST                = var.enable_rds_proxy ? aws_db_proxy.postgres[0].endpoint : aws_db_instance.postgres.address
    DATABASE_PORT                = tostring(aws_db_instance.postgres.port)
    DATABASE_NAME                = var.rds_database_name
    DATABASE_SSL_ROOT_CERT       = var.database_ssl_root_cert
    DEDUP_WINDOW_HOURS           = tostring(var.dedup_window_hours)
    DYNAMODB_TTL_DAYS            = tostring(var.dynamodb_ttl_days)
    DYNAMODB_CONCURRENCY         = tostring(var.dynamodb_concurrency)
    SINK_BUDGET_MS               = tostring(var.sink_budget_ms)
    LOG_FORMAT                   = "json"
    RUST_LOG                     = var.rust_log

    # Only what the consumer reads of the sites file (stream_consumer::site_ttl): each site's
    # item lifetime. Keys and origins stay the producer's.
    SITES_JSON = jsonencode({ sites = [for s in var.sites : { id = s.id, dynamodb_ttl_days = s.dynamodb_ttl_days } if s.dynamodb_ttl_days != null] })
  }
}

# --- Log groups (created first so retention and encryption apply from the first line) ---

resource "aws_cloudwatch_log_group" "producer" {
  name              = "/aws/lambda/${local.producer_function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "consumer" {
  name              = "/aws/lambda/${local.consumer_function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# --- Execution roles ----------------------------------------------------------

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "producer" {
  name               = "${local.producer_function_name}-lambda"
  description        = "producer-api: put records on the event stream"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "producer" {
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.producer.arn}:*"]
  }

  statement {
    sid       = "PutEvents"
    actions   = ["kinesis:PutRecords"]
    resources = [aws_kinesis_stream.events.arn]
  }

  statement {
    sid = "UseStreamAndEnvironmentKey"
    # GenerateDataKey: PutRecords on a KMS-encrypted stream.
    # Decrypt: the function's environment variables are encrypted with the same key.
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "producer" {
  name   = "producer-api"
  role   = aws_iam_role.producer.id
  policy = data.aws_iam_policy_document.producer.json
}

resource "aws_iam_role_policy_attachment" "producer_xray" {
  role       = aws_iam_role.producer.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

resource "aws_iam_role" "consumer" {
  name               = "${local.consumer_function_name}-lambda"
  description        = "stream-consumer: read the stream, write the lake, DynamoDB and PostgreSQL"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "consumer" {
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.consumer.arn}:*"]
  }

  # Used by the event source mapping (it polls with the function's role).
  statement {
    sid = "ReadStream"
    actions = [
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:GetRecords",
      "kinesis:GetShardIterator",
      "kinesis:ListShards",
    ]
    resources = [aws_kinesis_stream.events.arn]
  }

  statement {
    sid     = "ReadWriteLakeObjects"
    actions = ["s3:PutObject", "s3:GetObject"] # GetObject also authorises HeadObject
    resources = [
      "${aws_s3_bucket.lake.arn}/${local.lake_events_prefix}*",
      "${aws_s3_bucket.lake.arn}/${local.lake_dead_letter_prefix}*",
    ]
  }

  # ListBucket lets HeadObject on a missing key answer 404 instead of 403. A listing request
  # that names a prefix must name one of the consumer's two.
  statement {
    sid       = "ListLakePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]

    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["${local.lake_events_prefix}*", "${local.lake_dead_letter_prefix}*"]
    }
  }

  statement {
    sid       = "WriteEventItems"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:PutItem"]
    resources = [aws_dynamodb_table.events.arn]
  }

  statement {
    sid       = "ReadDatabaseSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.db_app_secret_arn, local.db_secret_arn]
  }

  statement {
    sid       = "SendFailedBatchDescriptors"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.consumer_failures.arn]
  }

  statement {
    sid = "UseDataKey"
    # Decrypt: encrypted stream records, lake objects read back, the DB secret, env vars.
    # GenerateDataKey: SSE-KMS lake writes and messages to the encrypted queue.
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "consumer" {
  name   = "stream-consumer"
  role   = aws_iam_role.consumer.id
  policy = data.aws_iam_policy_document.consumer.json
}

# Create/describe/delete the function's ENIs in the private subnets (AWS managed, ENI actions only).
resource "aws_iam_role_policy_attachment" "consumer_vpc" {
  role       = aws_iam_role.consumer.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaENIManagementAccess"
}

resource "aws_iam_role_policy_attachment" "consumer_xray" {
  role       = aws_iam_role.consumer.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

# --- Functions ----------------------------------------------------------------

resource "aws_lambda_function" "producer" {
  #checkov:skip=CKV_AWS_117:Internet-facing behind API Gateway and talks only to the Kinesis API over TLS with IAM auth; a VPC adds ENIs and cold-start latency and protects nothing here.
  #checkov:skip=CKV_AWS_116:Invoked only synchronously by API Gateway; a DLQ applies to asynchronous invocations and would never receive anything.
  #checkov:skip=CKV_AWS_272:Artifacts are built from the repository by `make package`; there is no AWS Signer profile in this stack. Add one with aws_lambda_code_signing_config if artifacts come from elsewhere.
  function_name = local.producer_function_name
  description   = "POST /events -> Kinesis PutRecords"
  role          = aws_iam_role.producer.arn

  filename         = local.producer_zip
  source_code_hash = filebase64sha256(local.producer_zip)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]

  memory_size                    = var.producer_memory_mb
  timeout                        = var.producer_timeout_seconds
  reserved_concurrent_executions = var.producer_reserved_concurrency
  kms_key_arn                    = aws_kms_key.main.arn

  environment {
    # Empty values (no default site key, no CA bundle) are left out: unset means "default".
    variables = { for k, v in local.producer_environment : k => v if v != "" }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.producer,
    aws_iam_role_policy.producer,
  ]
}

resource "aws_lambda_function" "consumer" {
  #checkov:skip=CKV_AWS_116:Invoked only by the Kinesis event source mapping; failed batches go to its on-failure SQS destination (stream.tf). A function DLQ covers asynchronous invocations, which never happen.
  #checkov:skip=CKV_AWS_272:Artifacts are built from the repository by `make package`; there is no AWS Signer profile in this stack. Add one with aws_lambda_code_signing_config if artifacts come from elsewhere.
  function_name = local.consumer_function_name
  description   = "Kinesis batch -> S3 Parquet lake, DynamoDB, PostgreSQL"
  role          = aws_iam_role.consumer.arn

  filename         = local.consumer_zip
  source_code_hash = filebase64sha256(local.consumer_zip)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.lambda_architecture]

  memory_size                    = var.consumer_memory_mb
  timeout                        = var.consumer_timeout_seconds
  reserved_concurrent_executions = var.consumer_reserved_concurrency
  kms_key_arn                    = aws_kms_key.main.arn

  vpc_config {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.consumer.id]
  }

  environment {
    variables = { for k, v in local.consumer_environment : k => v if v != "" }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [
    aws_cloudwatch_log_group.consumer,
    aws_iam_role_policy.consumer,
    aws_iam_role_policy_attachment.consumer_vpc,
  ]
}
