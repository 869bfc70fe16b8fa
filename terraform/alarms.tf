# CloudWatch alarms -> encrypted SNS topic (optionally mailed to var.alarm_email).

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.main.arn
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
}

# The consumer is falling behind the stream: the newest batch it received was older than the
# threshold for N consecutive minutes (records will expire at stream_retention_hours).
resource "aws_cloudwatch_metric_alarm" "consumer_iterator_age" {
  alarm_name          = "${var.name}-consumer-iterator-age"
  alarm_description   = "stream-consumer IteratorAge above ${var.iterator_age_threshold_ms} ms for ${var.iterator_age_evaluation_minutes} minutes: the consumer is falling behind Kinesis."
  namespace           = "AWS/Lambda"
  metric_name         = "IteratorAge"
  dimensions          = { FunctionName = aws_lambda_function.consumer.function_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = var.iterator_age_evaluation_minutes
  threshold           = var.iterator_age_threshold_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  for_each = {
    producer = aws_lambda_function.producer.function_name
    consumer = aws_lambda_function.consumer.function_name
  }

  alarm_name          = "${var.name}-${each.key}-errors"
  alarm_description   = "${each.value} reported at least ${var.lambda_errors_threshold} invocation errors in 5 minutes."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.lambda_errors_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# A batch the consumer failed: it answered with the batch's first record in batchItemFailures and
# the mapping retries it. The handler reports failures in its response, not as an invocation
# error (which would make the mapping ignore the partial-batch response; ARCHITECTURE.md,
# "Start-up"), so Lambda's Errors metric stays 0 for them: this EMF metric is the signal.
resource "aws_cloudwatch_metric_alarm" "consumer_batches_failed" {
  alarm_name          = "${var.name}-consumer-batches-failed"
  alarm_description   = "stream-consumer failed at least one batch in 5 minutes (EMF consumer_batches_total, outcome=failed); the mapping retries it. Its log line 'batch failed' says why."
  namespace           = "WebAnalytics"
  metric_name         = "consumer_batches_total"
  dimensions          = { function = "stream-consumer", outcome = "failed" }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Any message here is a batch the consumer gave up on (retries or record age exhausted).
resource "aws_cloudwatch_metric_alarm" "consumer_failures_queue" {
  alarm_name          = "${var.name}-consumer-failed-batches"
  alarm_description   = "Failed-batch descriptors are waiting in ${aws_sqs_queue.consumer_failures.name}; replay the sequence ranges they name."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.consumer_failures.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "api_5xx_rest" {
  count = local.rest ? 1 : 0

  alarm_name          = "${var.name}-api-5xx"
  alarm_description   = "The ingestion API returned at least ${var.api_5xx_threshold} 5xx responses in 5 minutes."
  namespace           = "AWS/ApiGateway"
  metric_name         = "5XXError"
  dimensions          = { ApiName = aws_api_gateway_rest_api.producer[0].name, Stage = var.api_stage_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.api_5xx_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "api_5xx_http" {
  count = local.http ? 1 : 0

  alarm_name          = "${var.name}-api-5xx"
  alarm_description   = "The ingestion API returned at least ${var.api_5xx_threshold} 5xx responses in 5 minutes."
  namespace           = "AWS/ApiGateway"
  metric_name         = "5xx"
  dimensions          = { ApiId = aws_apigatewayv2_api.producer[0].id, Stage = var.api_stage_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.api_5xx_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
