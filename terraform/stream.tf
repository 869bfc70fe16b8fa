# Kinesis stream, the event source mapping that feeds it to the consumer, and the SQS queue
# that receives descriptors of batches the consumer gave up on.

resource "aws_kinesis_stream" "events" {
  name             = local.stream_name
  retention_period = var.stream_retention_hours
  shard_count      = var.stream_mode == "PROVISIONED" ? var.stream_shard_count : null

  encryption_type = "KMS"
  kms_key_id      = aws_kms_key.main.arn

  stream_mode_details {
    stream_mode = var.stream_mode
  }
}

# On-failure destination: Lambda sends a JSON record (shard, sequence range, error) here for
# each batch that exhausted maximum_retry_attempts / maximum_record_age_in_seconds. The
# records themselves stay in Kinesis until retention ends; replay them from the sequence range.
resource "aws_sqs_queue" "consumer_failures" {
  name                              = "${var.name}-stream-consumer-failures"
  message_retention_seconds         = var.dlq_retention_seconds
  kms_master_key_id                 = aws_kms_key.main.arn
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_lambda_event_source_mapping" "consumer" {
  function_name     = aws_lambda_function.consumer.arn
  event_source_arn  = aws_kinesis_stream.events.arn
  starting_position = var.consumer_starting_position
  enabled           = true

  batch_size                         = var.consumer_batch_size
  maximum_batching_window_in_seconds = var.consumer_batching_window_seconds
  parallelization_factor             = var.consumer_parallelization_factor

  # The consumer returns {"batchItemFailures": [{"itemIdentifier": "<sequence number>"}]};
  # Lambda retries from the first failed record, halving the batch on function errors.
  function_response_types        = ["ReportBatchItemFailures"]
  bisect_batch_on_function_error = true
  maximum_retry_attempts         = var.consumer_max_retry_attempts
  maximum_record_age_in_seconds  = var.consumer_max_record_age_seconds

  destination_config {
    on_failure {
      destination_arn = aws_sqs_queue.consumer_failures.arn
    }
  }

  # The execution role must be able to read the stream and write the queue before the
  # mapping is created, or creation fails.
  depends_on = [aws_iam_role_policy.consumer]
}
