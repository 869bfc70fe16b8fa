# `terraform test` for the alarms, the budget and who may publish to the alarm topic
# (alarms.tf, kms.tf, compactor.tf, forget.tf), against the mocked AWS provider of tests/mocks/:
# every alarm exists, treats missing data as its comment says, and notifies the SNS topic on
# ALARM and on OK; the budget notifies the same topic; the topic and the key let CloudWatch and
# Budgets publish.

mock_provider "aws" {
  source = "./tests/mocks"
}

run "alarms_default_stack" {
  command = apply

  # Missing data = breaching where absence means the pipeline (or the database, or the hourly
  # job) stopped; notBreaching where the metric only exists when something went wrong or when
  # there was traffic at all. Whatever its kind, every alarm notifies the topic on ALARM and
  # back on OK.
  assert {
    condition     = aws_cloudwatch_metric_alarm.consumer_iterator_age.treat_missing_data == "breaching"
    error_message = "a consumer that receives no batch at all must alarm (traffic is expected by default)"
  }
  assert {
    condition = alltrue([for a in concat(
      [aws_cloudwatch_metric_alarm.consumer_iterator_age, aws_cloudwatch_metric_alarm.compactor_errors],
      values(aws_cloudwatch_metric_alarm.rds),
      ) : a.treat_missing_data == "breaching"
      && toset(a.alarm_actions) == toset([aws_sns_topic.alarms.arn]) && toset(a.ok_actions) == toset([aws_sns_topic.alarms.arn])
    ])
    error_message = "IteratorAge (traffic expected), RDS metrics and the hourly compactor's Errors always exist while things run: missing is breaching; alarm_actions and ok_actions are exactly the alarm topic"
  }
  assert {
    condition = alltrue([for a in concat(
      [
        aws_cloudwatch_metric_alarm.consumer_batches_failed,
        aws_cloudwatch_metric_alarm.consumer_failures_queue,
        aws_cloudwatch_metric_alarm.consumer_quarantine_ratio,
        aws_cloudwatch_metric_alarm.producer_unaccepted_ratio,
        aws_cloudwatch_metric_alarm.forget_errors,
      ],
      values(aws_cloudwatch_metric_alarm.lambda_errors),
      values(aws_cloudwatch_metric_alarm.api_5xx),
      ) : a.treat_missing_data == "notBreaching"
      && toset(a.alarm_actions) == toset([aws_sns_topic.alarms.arn]) && toset(a.ok_actions) == toset([aws_sns_topic.alarms.arn])
    ])
    error_message = "error counters, traffic ratios and the daily forget's Errors exist only with errors, traffic or a run: missing is notBreaching; alarm_actions and ok_actions are exactly the alarm topic"
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.forget_errors.namespace == "AWS/Lambda"
      && aws_cloudwatch_metric_alarm.forget_errors.metric_name == "Errors"
      && aws_cloudwatch_metric_alarm.forget_errors.dimensions["FunctionName"] == aws_lambda_function.forget.function_name
      && aws_cloudwatch_metric_alarm.forget_errors.threshold == 1
    )
    error_message = "one failed erasure run is enough to alarm"
  }
  assert {
    condition     = toset(keys(aws_cloudwatch_metric_alarm.lambda_errors)) == toset(["producer", "consumer"])
    error_message = "an Errors alarm per request-path function"
  }

  # What each alarm watches.
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.consumer_iterator_age.metric_name == "IteratorAge"
      && aws_cloudwatch_metric_alarm.consumer_iterator_age.dimensions["FunctionName"] == aws_lambda_function.consumer.function_name
    )
    error_message = "iterator age of the consumer function"
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.consumer_batches_failed.namespace == "WebAnalytics"
      && aws_cloudwatch_metric_alarm.consumer_batches_failed.dimensions == tomap({ function = "stream-consumer", outcome = "failed" })
    )
    error_message = "failed batches: the consumer's EMF counter under its full dimension set"
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.consumer_failures_queue.dimensions["QueueName"] == aws_sqs_queue.consumer_failures.name
      && aws_cloudwatch_metric_alarm.consumer_failures_queue.threshold == 0
      && aws_cloudwatch_metric_alarm.consumer_failures_queue.comparison_operator == "GreaterThanThreshold"
    )
    error_message = "one message in the on-failure queue is enough to alarm"
  }
  assert {
    condition = (
      toset([for q in aws_cloudwatch_metric_alarm.consumer_quarantine_ratio.metric_query : q.metric[0].dimensions["reason"] if try(q.metric[0].metric_name, "") == "consumer_quarantined_total"]) == toset(local.quarantine_reasons)
      && length([for q in aws_cloudwatch_metric_alarm.consumer_quarantine_ratio.metric_query : q if length(q.metric) > 0]) <= 10
      && [for q in aws_cloudwatch_metric_alarm.consumer_quarantine_ratio.metric_query : q.id if q.return_data == true] == ["ratio"]
      && aws_cloudwatch_metric_alarm.consumer_quarantine_ratio.threshold == 1
    )
    error_message = "quarantine ratio: one query per reason (at most 10 metrics, CloudWatch's limit), one returned expression, 1% by default"
  }
  assert {
    condition = (
      keys(aws_cloudwatch_metric_alarm.api_5xx) == ["rest"]
      && toset([for q in aws_cloudwatch_metric_alarm.api_5xx["rest"].metric_query : q.metric[0].metric_name if length(q.metric) > 0]) == toset(["5XXError", "Count"])
      && alltrue([for q in aws_cloudwatch_metric_alarm.api_5xx["rest"].metric_query : q.metric[0].dimensions["ApiName"] == aws_api_gateway_rest_api.producer[0].name if length(q.metric) > 0])
      && [for q in aws_cloudwatch_metric_alarm.api_5xx["rest"].metric_query : q.id if q.return_data == true] == ["ratio"]
    )
    error_message = "REST API: 5xx responses over all requests"
  }
  assert {
    condition = (
      toset([for q in aws_cloudwatch_metric_alarm.producer_unaccepted_ratio.metric_query : q.metric[0].dimensions["outcome"] if length(q.metric) > 0]) == toset(["accepted", "unaccepted"])
      && alltrue([for q in aws_cloudwatch_metric_alarm.producer_unaccepted_ratio.metric_query : q.metric[0].dimensions["function"] == "producer-api" if length(q.metric) > 0])
    )
    error_message = "unaccepted events: the producer's EMF counter, accepted vs unaccepted"
  }
  assert {
    condition = (
      toset([for a in values(aws_cloudwatch_metric_alarm.rds) : a.metric_name]) == toset(["CPUUtilization", "FreeStorageSpace", "DatabaseConnections"])
      && toset([for a in values(aws_cloudwatch_metric_alarm.rds) : a.alarm_name]) == toset(["analytics-rds-cpu", "analytics-rds-free-storage", "analytics-rds-connections"])
      && alltrue([for a in values(aws_cloudwatch_metric_alarm.rds) : a.namespace == "AWS/RDS" && a.dimensions["DBInstanceIdentifier"] == aws_db_instance.postgres.identifier])
    )
    error_message = "the RDS alarms watch CPU, free storage and connections of this stack's instance"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.rds["free_storage"].threshold == 2 * 1024 * 1024 * 1024 && aws_cloudwatch_metric_alarm.rds["free_storage"].comparison_operator == "LessThanThreshold"
    error_message = "free storage alarms below 10% of the default 20 GiB"
  }

  # The budget, and who may publish to the topic.
  assert {
    condition = (
      aws_budgets_budget.monthly.budget_type == "COST"
      && aws_budgets_budget.monthly.time_unit == "MONTHLY"
      && tonumber(aws_budgets_budget.monthly.limit_amount) == 200
      && aws_budgets_budget.monthly.limit_unit == "USD"
    )
    error_message = "a monthly cost budget of monthly_budget_usd (200 by default)"
  }
  assert {
    condition = (
      toset([for n in aws_budgets_budget.monthly.notification : "${n.notification_type}:${n.threshold}"]) == toset(["ACTUAL:80", "ACTUAL:100", "FORECASTED:100"])
      && alltrue([for n in aws_budgets_budget.monthly.notification : toset(n.subscriber_sns_topic_arns) == toset([aws_sns_topic.alarms.arn]) && n.threshold_type == "PERCENTAGE"])
    )
    error_message = "the budget notifies the alarm topic at 80% and 100% of actual spend and on a forecast above the limit"
  }
  assert {
    condition = alltrue([for service in ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"] :
      length([for s in jsondecode(aws_sns_topic_policy.alarms.policy).Statement : s
        # try(): HCL evaluates every operand of &&, and other statements lack these keys.
        if try(s.Effect == "Allow" && s.Principal.Service == service && s.Action == "sns:Publish" && s.Resource == aws_sns_topic.alarms.arn
    && s.Condition.StringEquals["aws:SourceAccount"] == "123456789012", false)]) == 1])
    error_message = "the topic policy lets CloudWatch alarms and Budgets publish, on this account's behalf only"
  }
  assert {
    condition     = aws_sns_topic_policy.alarms.arn == aws_sns_topic.alarms.arn && aws_sns_topic.alarms.kms_master_key_id == aws_kms_key.main.arn
    error_message = "the policy is on the alarm topic, which is encrypted with the stack's key"
  }
  assert {
    condition = alltrue([for service in ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"] :
      length([for s in jsondecode(aws_kms_key.main.policy).Statement : s
        if try(s.Effect == "Allow" && s.Principal.Service == service && toset(s.Action) == toset(["kms:Decrypt", "kms:GenerateDataKey*"])
    && s.Condition.StringEquals["kms:EncryptionContext:aws:sns:topicArn"] == local.alarm_topic_arn, false)]) == 1])
    error_message = "the key lets CloudWatch and Budgets encrypt messages for the alarm topic, and only for it"
  }
  assert {
    condition     = endswith(local.alarm_topic_arn, ":${aws_sns_topic.alarms.name}") && startswith(local.alarm_topic_arn, "arn:aws:sns:us-east-1:123456789012:")
    error_message = "the ARN the key policy names is the alarm topic's"
  }
}

run "alarms_idle_stack_http_api" {
  command = apply

  variables {
    alarm_on_missing_traffic = false
    api_type                 = "http"
    monthly_budget_usd       = 50
    rds_allocated_storage_gb = 100
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.consumer_iterator_age.treat_missing_data == "notBreaching"
    error_message = "alarm_on_missing_traffic = false lets an idle stack's iterator-age alarm rest"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.rds["cpu"].treat_missing_data == "breaching" && aws_cloudwatch_metric_alarm.compactor_errors.treat_missing_data == "breaching"
    error_message = "alarms that do not depend on traffic keep missing = breaching"
  }
  assert {
    condition = (
      keys(aws_cloudwatch_metric_alarm.api_5xx) == ["http"]
      && aws_cloudwatch_metric_alarm.api_5xx["http"].treat_missing_data == "notBreaching"
      && toset(aws_cloudwatch_metric_alarm.api_5xx["http"].alarm_actions) == toset([aws_sns_topic.alarms.arn])
      && toset(aws_cloudwatch_metric_alarm.api_5xx["http"].ok_actions) == toset([aws_sns_topic.alarms.arn])
      && toset([for q in aws_cloudwatch_metric_alarm.api_5xx["http"].metric_query : q.metric[0].metric_name if length(q.metric) > 0]) == toset(["5xx", "Count"])
      && alltrue([for q in aws_cloudwatch_metric_alarm.api_5xx["http"].metric_query : q.metric[0].dimensions["ApiId"] == aws_apigatewayv2_api.producer[0].id if length(q.metric) > 0])
    )
    error_message = "HTTP API: its own 5xx and Count metrics, routed to the topic"
  }
  assert {
    condition     = tonumber(aws_budgets_budget.monthly.limit_amount) == 50
    error_message = "monthly_budget_usd sets the budget's limit"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.rds["free_storage"].threshold == 10 * 1024 * 1024 * 1024
    error_message = "the free-storage threshold follows the allocated storage"
  }
}

run "rejects_meaningless_alarm_thresholds" {
  command = plan

  variables {
    api_5xx_ratio_threshold_percent    = 0
    quarantine_ratio_threshold_percent = 100
    rds_cpu_alarm_percent              = 100
    monthly_budget_usd                 = 0
  }

  expect_failures = [
    var.api_5xx_ratio_threshold_percent,
    var.quarantine_ratio_threshold_percent,
    var.rds_cpu_alarm_percent,
    var.monthly_budget_usd,
  ]
}
