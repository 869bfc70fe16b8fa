# Alarms and the monthly budget -> one encrypted SNS topic (optionally mailed to var.alarm_email).
# terraform/README.md, "Alarms and runbook", says what each alarm means and what to do about it.
#
# treat_missing_data is chosen per alarm, and each says why. The rule: a metric that exists only
# when something goes wrong (an EMF error counter is written only when it is non-zero, because
# the recorder does not emit zeros) is notBreaching when missing; a metric whose absence means
# the pipeline stopped (IteratorAge, RDS's own metrics, the hourly compactor's Errors) is
# breaching when missing, so a dead pipeline cannot look healthy. CloudWatch only fills missing
# points when the evaluation range holds fewer real ones than evaluation_periods, so a single gap
# rarely pages; a pipeline that stays silent does.
#
# Application metrics are CloudWatch EMF (service-kit/src/telemetry.rs): namespace
# EMF_NAMESPACE, a `function` dimension ("producer-api", "stream-consumer", the names the
# binaries pass to MetricsExport::for_process) plus one dimension per metric label. A metric
# with labels exists only under its full dimension set, so every query below names all of them;
# tests/test_alarms.py checks names and dimension sets against the code.

locals {
  alarm_topic_name = "${var.name}-alarms"
  # Built from the name, not read from the topic: the key policy (kms.tf) scopes its grants to
  # this ARN, and the topic itself is encrypted with that key.
  alarm_topic_arn = "arn:${local.partition}:sns:${local.region}:${local.account_id}:${local.alarm_topic_name}"
  alarm_actions   = [aws_sns_topic.alarms.arn]

  emf_namespace        = "WebAnalytics"
  emf_producer         = "producer-api"
  emf_consumer         = "stream-consumer"
  traffic_missing_data = var.alarm_on_missing_traffic ? "breaching" : "notBreaching"

  # Every reason the consumer's Lambda handler can quarantine an event for: the decoder's
  # reason codes (stream-consumer/src/telemetry.rs QUARANTINE_REASONS without "batch_failed",
  # which only the local runner reports). `reason` is a dimension, so the alarm needs one query
  # per value; tests/test_alarms.py fails when the code's list changes.
  quarantine_reasons = ["too_large", "invalid_utf8", "not_json", "missing_version", "unknown_version", "malformed_envelope", "invalid_event"]

  # 10% of the initial storage: where RDS storage autoscaling (rds_max_allocated_storage_gb)
  # starts growing the volume too. Past autoscaling it still fires before the disk is full.
  rds_free_storage_alarm_bytes = var.rds_allocated_storage_gb * 0.1 * pow(1024, 3)
}

resource "aws_sns_topic" "alarms" {
  name              = local.alarm_topic_name
  kms_master_key_id = aws_kms_key.main.arn
}

# The topic's policy replaces SNS's default one: the account keeps managing the topic through
# IAM, and the two services that publish as themselves may publish, only on this account's
# behalf. (Their kms:GenerateDataKey/Decrypt grants are in kms.tf.)
resource "aws_sns_topic_policy" "alarms" {
  arn = aws_sns_topic.alarms.arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountManagesTopicThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action = [
          "sns:GetTopicAttributes",
          "sns:SetTopicAttributes",
          "sns:AddPermission",
          "sns:RemovePermission",
          "sns:DeleteTopic",
          "sns:Subscribe",
          "sns:ListSubscriptionsByTopic",
          "sns:Publish",
        ]
        Resource = aws_sns_topic.alarms.arn
      },
      {
        Sid       = "CloudWatchAlarmsPublish"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = "sns:Publish"
        Resource  = aws_sns_topic.alarms.arn
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
          ArnLike      = { "aws:SourceArn" = "arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:*" }
        }
      },
      {
        Sid       = "BudgetsPublish"
        Effect    = "Allow"
        Principal = { Service = "budgets.amazonaws.com" }
        Action    = "sns:Publish"
        Resource  = aws_sns_topic.alarms.arn
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
          ArnLike      = { "aws:SourceArn" = "arn:${local.partition}:budgets::${local.account_id}:*" }
        }
      },
    ]
  })
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# --- Consumer: lag, silence, failures ---------------------------------------------------

# The consumer is falling behind the stream: the newest batch it received was older than the
# threshold for N consecutive minutes (records expire at stream_retention_hours).
resource "aws_cloudwatch_metric_alarm" "consumer_iterator_age" {
  alarm_name          = "${var.name}-consumer-iterator-age"
  alarm_description   = "stream-consumer IteratorAge above ${var.iterator_age_threshold_ms} ms for ${var.iterator_age_evaluation_minutes} minutes, or no batch reached it at all: the consumer is falling behind Kinesis, or nothing flows (producer, stream or event source mapping stopped)."
  namespace           = "AWS/Lambda"
  metric_name         = "IteratorAge"
  dimensions          = { FunctionName = aws_lambda_function.consumer.function_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = var.iterator_age_evaluation_minutes
  threshold           = var.iterator_age_threshold_ms
  comparison_operator = "GreaterThanThreshold"
  # Breaching (unless alarm_on_missing_traffic = false): Lambda reports IteratorAge only for
  # invocations the mapping makes, so with traffic always arriving a missing value means no
  # batch reached the consumer: the producer, the stream or the mapping has stopped. This is
  # the stack's "pipeline is silent" alarm; the error alarms below stay quiet on silence.
  treat_missing_data = local.traffic_missing_data
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  for_each = {
    producer = aws_lambda_function.producer.function_name
    consumer = aws_lambda_function.consumer.function_name
  }

  alarm_name          = "${var.name}-${each.key}-errors"
  alarm_description   = "${each.value} reported at least ${var.lambda_errors_threshold} invocation errors in 5 minutes (crash, timeout or init failure)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.lambda_errors_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  # notBreaching: Errors exists (as 0) for every invocation, so it is missing only when nothing
  # invoked the function; silence is the iterator-age alarm's to report, not this one's.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
}

# A batch the consumer failed: it answered with the batch's first record in batchItemFailures and
# the mapping retries it. The handler reports failures in its response, not as an invocation
# error (which would make the mapping ignore the partial-batch response; ARCHITECTURE.md,
# "Start-up"), so Lambda's Errors metric stays 0 for them: this EMF metric is the signal.
resource "aws_cloudwatch_metric_alarm" "consumer_batches_failed" {
  alarm_name          = "${var.name}-consumer-batches-failed"
  alarm_description   = "stream-consumer failed at least one batch in 5 minutes (EMF consumer_batches_total, outcome=failed); the mapping retries it. Its log line 'batch failed' says why."
  namespace           = local.emf_namespace
  metric_name         = "consumer_batches_total"
  dimensions          = { function = local.emf_consumer, outcome = "failed" }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  # notBreaching: the EMF recorder writes a counter only when it moved, so this series exists
  # only in periods with a failed batch; missing means none failed.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
}

# Any message here is a batch the consumer gave up on (retries or record age exhausted): its
# records are still in Kinesis only until stream_retention_hours after they arrived.
resource "aws_cloudwatch_metric_alarm" "consumer_failures_queue" {
  alarm_name          = "${var.name}-consumer-failed-batches"
  alarm_description   = "Failed-batch descriptors are waiting in ${aws_sqs_queue.consumer_failures.name}: replay the sequence ranges they name before Kinesis retention drops the records."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.consumer_failures.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  # notBreaching: SQS stops publishing a queue's metrics after about six hours without messages
  # or API calls, so for this queue (normally empty and untouched) missing means empty. A
  # message keeps the queue active, and so the metric present.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
}

# Share of the events the consumer decoded that it quarantined to dead-letter/ (undecodable,
# unknown version, invalid). The producer validates what it accepts, so a rising share means a
# writer or schema change the consumer does not understand.
resource "aws_cloudwatch_metric_alarm" "consumer_quarantine_ratio" {
  alarm_name          = "${var.name}-consumer-quarantine-ratio"
  alarm_description   = "stream-consumer quarantined more than ${var.quarantine_ratio_threshold_percent}% of the events it decoded in 5 minutes (EMF consumer_quarantined_total by reason vs consumer_events_stored_total); the rows are under dead-letter/ in the lake."
  evaluation_periods  = 1
  threshold           = var.quarantine_ratio_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  # notBreaching: both counters are written only when non-zero, so with no traffic every series
  # is missing; silence is the iterator-age alarm's to report. With traffic the expression
  # always has a value (0 when nothing was quarantined).
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions

  dynamic "metric_query" {
    for_each = local.quarantine_reasons
    content {
      id = "q${metric_query.key}"
      metric {
        namespace   = local.emf_namespace
        metric_name = "consumer_quarantined_total"
        dimensions  = { function = local.emf_consumer, reason = metric_query.value }
        stat        = "Sum"
        period      = 300
      }
    }
  }

  # Events claimed for the first time. Duplicates are left out of the denominator: a client's
  # resends would otherwise dilute the share of distinct events lost.
  metric_query {
    id = "stored"
    metric {
      namespace   = local.emf_namespace
      metric_name = "consumer_events_stored_total"
      dimensions  = { function = local.emf_consumer }
      stat        = "Sum"
      period      = 300
    }
  }

  metric_query {
    id         = "quarantined"
    expression = join(" + ", [for i, _ in local.quarantine_reasons : "FILL(q${i}, 0)"])
    label      = "Events quarantined"
  }

  metric_query {
    id          = "ratio"
    expression  = "IF(quarantined + FILL(stored, 0) > 0, 100 * quarantined / (quarantined + FILL(stored, 0)), 0)"
    label       = "Quarantined events (%)"
    return_data = true
  }
}

# --- Producer: what clients see -----------------------------------------------------------

# Share of API requests answered 5xx, counted by API Gateway: it sees what the producer's own
# producer_requests_total cannot (a crashed, timed-out or throttled invocation never reaches the
# code that counts), and "any 5xx" over that counter's `status` dimension would need SEARCH,
# which alarms do not accept. REST and HTTP APIs publish the same two counts under their own
# names and dimensions; the alarm exists for the deployed api_type only.
locals {
  api_5xx_metrics = {
    rest = {
      errors_metric = "5XXError"
      dimensions    = { ApiName = one(aws_api_gateway_rest_api.producer[*].name), Stage = var.api_stage_name }
    }
    http = {
      errors_metric = "5xx"
      dimensions    = { ApiId = one(aws_apigatewayv2_api.producer[*].id), Stage = var.api_stage_name }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  for_each = { for type, api in local.api_5xx_metrics : type => api if type == var.api_type }

  alarm_name          = "${var.name}-api-5xx"
  alarm_description   = "More than ${var.api_5xx_ratio_threshold_percent}% of the ingestion API's requests were answered 5xx, in each of two 5-minute periods."
  evaluation_periods  = 2
  threshold           = var.api_5xx_ratio_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  # notBreaching: API Gateway (REST and HTTP alike) publishes only for periods with requests; no
  # requests is silence, which the iterator-age alarm reports.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions

  metric_query {
    id = "errors"
    metric {
      namespace   = "AWS/ApiGateway"
      metric_name = each.value.errors_metric
      dimensions  = each.value.dimensions
      stat        = "Sum"
      period      = 300
    }
  }

  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApiGateway"
      metric_name = "Count"
      dimensions  = each.value.dimensions
      stat        = "Sum"
      period      = 300
    }
  }

  metric_query {
    id          = "ratio"
    expression  = "IF(requests > 0, 100 * FILL(errors, 0) / requests, 0)"
    label       = "5xx responses (%)"
    return_data = true
  }
}

# Share of valid events the producer could not put on the stream (Kinesis throttled or
# unavailable; the client got 429 or 503 and must resend them). A throttled stream answers 429,
# which the 5xx alarm does not see: this is the "add shards" signal.
resource "aws_cloudwatch_metric_alarm" "producer_unaccepted_ratio" {
  alarm_name          = "${var.name}-producer-unaccepted-ratio"
  alarm_description   = "producer-api could not put more than ${var.producer_unaccepted_ratio_threshold_percent}% of valid events on the stream, in each of two 5-minute periods (EMF producer_events_total, outcome=unaccepted vs accepted): Kinesis throttles or fails PutRecords."
  evaluation_periods  = 2
  threshold           = var.producer_unaccepted_ratio_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  # notBreaching: the counters are written only when non-zero, so no traffic means no series.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions

  dynamic "metric_query" {
    for_each = toset(["accepted", "unaccepted"])
    content {
      id = metric_query.value
      metric {
        namespace   = local.emf_namespace
        metric_name = "producer_events_total"
        dimensions  = { function = local.emf_producer, outcome = metric_query.value }
        stat        = "Sum"
        period      = 300
      }
    }
  }

  metric_query {
    id          = "ratio"
    expression  = "IF(FILL(accepted, 0) + FILL(unaccepted, 0) > 0, 100 * FILL(unaccepted, 0) / (FILL(accepted, 0) + FILL(unaccepted, 0)), 0)"
    label       = "Unaccepted events (%)"
    return_data = true
  }
}

# --- PostgreSQL (RDS) ---------------------------------------------------------------------

# One alarm per metric of this stack's instance (AWS/RDS, DBInstanceIdentifier), read in
# 5-minute periods; they differ only in what they read and where they fire.
locals {
  rds_alarms = {
    cpu = {
      description         = "PostgreSQL CPU above ${var.rds_cpu_alarm_percent}% for 15 minutes: claim transactions and rollups slow down and the consumer falls behind."
      metric_name         = "CPUUtilization"
      statistic           = "Average"
      evaluation_periods  = 3
      threshold           = var.rds_cpu_alarm_percent
      comparison_operator = "GreaterThanThreshold"
    }
    free_storage = {
      description         = "PostgreSQL has less than ${var.rds_allocated_storage_gb * 0.1} GiB of free storage (10% of the initial ${var.rds_allocated_storage_gb} GiB): a full volume stops every write, and with it the consumer."
      metric_name         = "FreeStorageSpace"
      statistic           = "Minimum"
      evaluation_periods  = 1
      threshold           = local.rds_free_storage_alarm_bytes
      comparison_operator = "LessThanThreshold"
    }
    connections = {
      description         = "PostgreSQL held more than ${var.rds_connections_alarm_threshold} connections for 10 minutes: close to max_connections, new consumer instances will be refused."
      metric_name         = "DatabaseConnections"
      statistic           = "Maximum"
      evaluation_periods  = 2
      threshold           = var.rds_connections_alarm_threshold
      comparison_operator = "GreaterThanThreshold"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "rds" {
  for_each = local.rds_alarms

  alarm_name          = "${var.name}-rds-${replace(each.key, "_", "-")}"
  alarm_description   = each.value.description
  namespace           = "AWS/RDS"
  metric_name         = each.value.metric_name
  dimensions          = { DBInstanceIdentifier = aws_db_instance.postgres.identifier }
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = each.value.evaluation_periods
  threshold           = each.value.threshold
  comparison_operator = each.value.comparison_operator
  # Breaching: RDS publishes CPUUtilization, FreeStorageSpace and DatabaseConnections (0
  # included) every minute while the instance runs, whatever the traffic; missing means it is
  # stopped, failed or gone.
  treat_missing_data = "breaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
}

# --- Cost -----------------------------------------------------------------------------------

# The whole account's monthly cost, not only this stack's: filtering on the Project tag would
# read $0 until someone activates it as a cost allocation tag in the Billing console, and a
# budget that silently reads $0 never fires. Budgets has no OK state, so it notifies once per
# threshold and month.
resource "aws_budgets_budget" "monthly" {
  name         = "${var.name}-monthly-cost"
  budget_type  = "COST"
  limit_amount = tostring(var.monthly_budget_usd)
  limit_unit   = "USD"
  time_unit    = "MONTHLY"

  # Actual spend at 80% and 100%: time to look, then time to act.
  dynamic "notification" {
    for_each = [80, 100]
    content {
      comparison_operator       = "GREATER_THAN"
      threshold                 = notification.value
      threshold_type            = "PERCENTAGE"
      notification_type         = "ACTUAL"
      subscriber_sns_topic_arns = [aws_sns_topic.alarms.arn]
    }
  }

  # The month's forecast above the limit: warns while there is still most of a month to act.
  notification {
    comparison_operator       = "GREATER_THAN"
    threshold                 = 100
    threshold_type            = "PERCENTAGE"
    notification_type         = "FORECASTED"
    subscriber_sns_topic_arns = [aws_sns_topic.alarms.arn]
  }

  # Budgets checks that it may publish when the budget is created.
  depends_on = [aws_sns_topic_policy.alarms]
}

# --- Former addresses ---------------------------------------------------------------------

# The 5xx and RDS alarms were one resource each; a stack applied before keeps its alarms.
moved {
  from = aws_cloudwatch_metric_alarm.api_5xx_rest[0]
  to   = aws_cloudwatch_metric_alarm.api_5xx["rest"]
}
moved {
  from = aws_cloudwatch_metric_alarm.api_5xx_http[0]
  to   = aws_cloudwatch_metric_alarm.api_5xx["http"]
}
moved {
  from = aws_cloudwatch_metric_alarm.rds_cpu
  to   = aws_cloudwatch_metric_alarm.rds["cpu"]
}
moved {
  from = aws_cloudwatch_metric_alarm.rds_free_storage
  to   = aws_cloudwatch_metric_alarm.rds["free_storage"]
}
moved {
  from = aws_cloudwatch_metric_alarm.rds_connections
  to   = aws_cloudwatch_metric_alarm.rds["connections"]
}
