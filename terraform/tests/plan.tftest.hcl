# `terraform test` against a mocked AWS provider (tests/mocks/aws.tfmock.hcl, which every
# .tftest.hcl here shares): no account, no network. Needs the hashicorp/aws provider installed
# (terraform init -plugin-dir=...; see README.md) and the Lambda zips at their default paths
# (tests/test_terraform.py writes placeholders in a copy).
#
# Plans (and fake-applies) the stack in its default shape and in the alternative one
# (HTTP API, RDS Proxy, provisioned stream), and checks that the variable validations reject
# unsafe input.

mock_provider "aws" {
  source = "./tests/mocks"
}

run "default_stack" {
  command = apply

  assert {
    condition     = local.azs == tolist(["us-east-1a", "us-east-1b"])
    error_message = "expected the first two AZs, sorted"
  }
  assert {
    condition     = aws_kinesis_stream.events.name == "analytics-events" && aws_kinesis_stream.events.shard_count == null
    error_message = "on-demand stream named analytics-events without a shard count"
  }
  assert {
    condition     = aws_s3_bucket.lake.bucket == "analytics-lake-123456789012-us-east-1"
    error_message = "lake bucket name carries account and region"
  }
  assert {
    condition     = length(aws_api_gateway_rest_api.producer) == 1 && length(aws_apigatewayv2_api.producer) == 0
    error_message = "REST API by default"
  }
  assert {
    condition     = strcontains(aws_api_gateway_rest_api.producer[0].body, "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/")
    error_message = "openapi.yaml must be rendered with the producer's invoke ARN"
  }
  assert {
    condition     = aws_lambda_permission.api_invoke_producer.source_arn == "arn:aws:execute-api:us-east-1:123456789012:abc123/v1/*"
    error_message = "invoke permission must be limited to the REST API's stage"
  }
  assert {
    condition     = aws_lambda_function.consumer.environment[0].variables["DATABASE_HOST"] == aws_db_instance.postgres.address
    error_message = "without the proxy the consumer connects to the instance"
  }
  assert {
    condition = (
      aws_lambda_function.consumer.environment[0].variables["DATABASE_SECRET_ARN"] == aws_secretsmanager_secret.db_app.arn
      && aws_lambda_function.consumer.environment[0].variables["DATABASE_MIGRATOR_SECRET_ARN"] == aws_db_instance.postgres.master_user_secret[0].secret_arn
      && aws_lambda_function.compactor.environment[0].variables["DATABASE_SECRET_ARN"] == aws_secretsmanager_secret.db_app.arn
      && !contains(keys(aws_lambda_function.compactor.environment[0].variables), "DATABASE_MIGRATOR_SECRET_ARN")
    )
    error_message = "the consumer and compactor work as the application role; only the consumer migrates, as the master user"
  }
  assert {
    condition = (
      aws_lambda_function.forget.environment[0].variables["DATABASE_SECRET_ARN"] == aws_secretsmanager_secret.db_app.arn
      && aws_lambda_function.forget.environment[0].variables["DYNAMODB_TABLE"] == aws_dynamodb_table.events.name
      && aws_lambda_function.forget.environment[0].variables["LAKE_BUCKET"] == aws_s3_bucket.lake.id
      && aws_lambda_function.forget.environment[0].variables["DATABASE_HOST"] == aws_db_instance.postgres.address
      # (the negation last: checkov's HCL parser cannot read `!x` followed by `&& y`)
      && !contains(keys(aws_lambda_function.forget.environment[0].variables), "DATABASE_MIGRATOR_SECRET_ARN")
    )
    error_message = "forget works as the application role on the lake bucket and the events table, like the compactor"
  }
  assert {
    condition = (
      length(aws_dynamodb_table.events.global_secondary_index) == 0
      && length(aws_dynamodb_table.events.local_secondary_index) == 0
      && toset([for a in aws_dynamodb_table.events.attribute : "${a.name}:${a.type}"]) == toset(["event_id:S"])
      && aws_dynamodb_table.events.hash_key == "event_id"
      && aws_dynamodb_table.events.range_key == null
    )
    error_message = "the events table has no secondary index (forget deletes a visitor's items by the event IDs of its lake rows) and event_id as its only key"
  }
  assert {
    condition = (
      aws_cloudwatch_event_rule.forget.schedule_expression == "cron(40 2 * * ? *)"
      && aws_cloudwatch_event_target.forget.arn == aws_lambda_function.forget.arn
      && jsondecode(aws_cloudwatch_event_target.forget.input) == {}
      && aws_lambda_permission.events_invoke_forget.source_arn == aws_cloudwatch_event_rule.forget.arn
      && aws_lambda_function_event_invoke_config.forget.maximum_retry_attempts == 0
      && aws_lambda_function.forget.reserved_concurrent_executions == 1
    )
    error_message = "forget runs daily on pending requests only (empty payload), one at a time, with the schedule as its retry"
  }
  assert {
    condition     = !contains(keys(aws_lambda_function.producer.environment[0].variables), "DEFAULT_SITE_KEY")
    error_message = "empty env values are omitted"
  }
  assert {
    condition     = length(aws_glue_catalog_table.events.storage_descriptor[0].columns) == 23
    error_message = "Glue table must have the 23 lake columns (schemas/lake_columns.json; #20 added original_occurred_at, sent_at, plan_violations; #23 country)"
  }
  assert {
    condition     = aws_glue_catalog_table.events.parameters["storage.location.template"] == "s3://${aws_s3_bucket.lake.id}/events/dt=$${dt}/hour=$${hour}/"
    error_message = "partition projection location template"
  }
  assert {
    condition     = length(aws_s3_object.grafana) > 0 && contains(keys(aws_s3_object.grafana), "docker-compose.yml")
    error_message = "grafana/docker-compose.yml is uploaded for the host"
  }
  assert {
    condition     = alltrue([for k in keys(aws_s3_object.grafana) : !startswith(k, "tests/") && !startswith(k, "tools/")])
    error_message = "grafana tests and tools are not uploaded"
  }
  assert {
    condition     = strcontains(aws_instance.grafana[0].user_data, "docker compose --profile aws up -d")
    error_message = "user_data starts the compose file's aws profile (Grafana alone)"
  }
  assert {
    condition = alltrue([for k in ["provisioning/datasources/datasources.yml", "provisioning/dashboards/dashboards.yml", "dashboards/stream-lag-cloudwatch.json", "dashboards/pipeline-aws-cloudwatch.json", "dashboards/pipeline-cloudwatch.json", "dashboards/site-analytics.json"] :
    contains(keys(aws_s3_object.grafana), k)])
    error_message = "the host gets Grafana's CloudWatch and Site analytics datasources and dashboards"
  }
  assert {
    condition = !anytrue([for k in keys(aws_s3_object.grafana) :
    startswith(k, "prometheus/") || startswith(k, "loki/") || startswith(k, "promtail/") || k == "provisioning/datasources/prometheus-loki.yml" || endswith(k, "-prometheus.json") || endswith(k, "-loki.json")])
    error_message = "nothing only the local profile's Prometheus, Loki or Promtail use goes to the host"
  }
  assert {
    condition     = strcontains(aws_instance.grafana[0].user_data, "DB_SECRET_ID='${aws_secretsmanager_secret.db_dashboard[0].arn}'") && strcontains(aws_instance.grafana[0].user_data, "ANALYTICS_DB_")
    error_message = "the host writes the dashboard's database login from its secret into the compose .env"
  }
  assert {
    condition     = jsondecode(aws_secretsmanager_secret_version.db_dashboard[0].secret_string).username == "grafana_reader" && jsondecode(aws_secretsmanager_secret_version.db_dashboard[0].secret_string).host == aws_db_instance.postgres.address
    error_message = "the dashboard's secret names its login and the instance (not the proxy)"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.rds_from_grafana[0].referenced_security_group_id == aws_security_group.grafana[0].id && aws_vpc_security_group_egress_rule.grafana_to_postgres[0].referenced_security_group_id == aws_security_group.rds.id
    error_message = "the Grafana host reaches PostgreSQL on 5432, and only it"
  }
  assert {
    condition     = output.grafana_url == "http://localhost:3000"
    error_message = "grafana_url is the SSM tunnel's local end"
  }
  assert {
    condition     = length(aws_db_proxy.postgres) == 0 && length(aws_vpc_security_group_ingress_rule.rds_from_consumer) == 1
    error_message = "no proxy by default; RDS open to the consumer only"
  }
  assert {
    condition = alltrue([for f in [aws_lambda_function.producer, aws_lambda_function.consumer, aws_lambda_function.compactor, aws_lambda_function.forget] :
    tolist(f.architectures) == tolist(["arm64"])])
    error_message = "all four functions run on arm64 by default"
  }
  assert {
    condition = alltrue([for f in [aws_lambda_function.consumer, aws_lambda_function.compactor, aws_lambda_function.forget] :
    f.environment[0].variables["DATABASE_SSL_ROOT_CERT"] == "/var/task/global-bundle.pem"])
    error_message = "the consumer, the compactor and forget verify PostgreSQL against the CA bundle make package ships"
  }
  assert {
    condition = (
      toset(keys(aws_api_gateway_gateway_response.json_error)) == toset(["DEFAULT_4XX", "DEFAULT_5XX"]) &&
      alltrue([for r in aws_api_gateway_gateway_response.json_error :
        r.response_templates["application/json"] == "{\"error\":$context.error.messageString}" &&
      r.response_parameters["gatewayresponse.header.Content-Type"] == "'application/json'"])
    )
    error_message = "API Gateway's own 4xx and 5xx answers have the producer's JSON error body"
  }
}

run "alternative_stack" {
  command = apply

  variables {
    api_type                   = "http"
    enable_rds_proxy           = true
    stream_mode                = "PROVISIONED"
    stream_shard_count         = 4
    availability_zones         = ["us-east-1c", "us-east-1d"]
    alarm_email                = "ops@example.com"
    lambda_architecture        = "x86_64"
    forget_schedule_expression = "rate(6 hours)"
  }

  override_data {
    target = data.aws_availability_zones.selected
    values = { names = ["us-east-1c", "us-east-1d"] }
  }

  assert {
    condition     = local.azs == tolist(["us-east-1c", "us-east-1d"])
    error_message = "explicit AZs are used"
  }
  assert {
    condition     = length(aws_apigatewayv2_route.producer) == 3 && length(aws_api_gateway_rest_api.producer) == 0
    error_message = "HTTP API with three routes"
  }
  assert {
    condition     = keys(aws_cloudwatch_metric_alarm.api_5xx) == ["http"]
    error_message = "5xx alarm follows the API type"
  }
  assert {
    condition     = aws_lambda_permission.api_invoke_producer.source_arn == "arn:aws:execute-api:us-east-1:123456789012:def456/v1/*"
    error_message = "invoke permission must be limited to the HTTP API's stage"
  }
  assert {
    condition     = aws_lambda_function.consumer.environment[0].variables["DATABASE_HOST"] == aws_db_proxy.postgres[0].endpoint
    error_message = "with the proxy the consumer connects to the proxy"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.rds_from_consumer) == 0 && length(aws_vpc_security_group_ingress_rule.rds_from_proxy) == 1
    error_message = "with the proxy only the proxy reaches RDS"
  }
  assert {
    condition     = aws_kinesis_stream.events.shard_count == 4
    error_message = "provisioned shard count"
  }
  assert {
    condition     = length(aws_sns_topic_subscription.alarm_email) == 1
    error_message = "alarm e-mail subscription"
  }
  assert {
    condition = alltrue([for f in [aws_lambda_function.producer, aws_lambda_function.consumer, aws_lambda_function.compactor, aws_lambda_function.forget] :
    tolist(f.architectures) == tolist(["x86_64"])])
    error_message = "lambda_architecture applies to all four functions"
  }
  assert {
    condition     = aws_lambda_function.forget.environment[0].variables["DATABASE_HOST"] == aws_db_proxy.postgres[0].endpoint && aws_cloudwatch_event_rule.forget.schedule_expression == "rate(6 hours)"
    error_message = "with the proxy forget connects to the proxy; forget_schedule_expression sets its schedule"
  }
  assert {
    condition     = length(aws_api_gateway_gateway_response.json_error) == 0
    error_message = "an HTTP API has no gateway responses to configure"
  }
}

run "retention_per_store" {
  command = plan

  variables {
    sites = [
      { id = "shop", key = "pk_shop", allowed_origins = ["https://shop.example"], events_per_second = 100, burst = 500, per_ip_events_per_second = 10, per_ip_burst = 500, dynamodb_ttl_days = 7 },
      { id = "blog", key = "pk_blog", allowed_origins = ["https://blog.example"], events_per_second = 100, burst = 500, per_ip_events_per_second = 10, per_ip_burst = 500 },
    ]
  }

  assert {
    condition = one([
      for r in aws_s3_bucket_lifecycle_configuration.lake.rule : r
      if r.id == "expire-events" && r.status == "Enabled" && r.filter[0].prefix == "events/" && r.expiration[0].days == 395
    ]) != null
    error_message = "events/ expires after lake_retention_days (395 by default)"
  }
  assert {
    condition     = aws_glue_catalog_table.events.parameters["projection.dt.range"] == "NOW-395DAYS,NOW"
    error_message = "Athena's projection of events reaches back exactly the retention, so it never lists an expired day"
  }
  assert {
    condition     = aws_glue_catalog_table.dead_letter.parameters["projection.dt.range"] == "NOW-30DAYS,NOW"
    error_message = "the dead_letter projection reaches back dead_letter_retention_days"
  }
  assert {
    condition     = aws_lambda_function.consumer.environment[0].variables["SITES_JSON"] == "{\"sites\":[{\"dynamodb_ttl_days\":7,\"id\":\"shop\"}]}"
    error_message = "the consumer gets each site's own item lifetime, and nothing else of the sites file"
  }
  assert {
    condition     = strcontains(aws_lambda_function.producer.environment[0].variables["SITES_JSON"], "\"dynamodb_ttl_days\":7")
    error_message = "the producer's sites file carries the setting too (it accepts and ignores it)"
  }
}

run "lake_kept_forever" {
  command = plan

  variables {
    lake_retention_days        = 0
    lake_projection_start_date = "2023-06-01"
  }

  assert {
    condition     = one([for r in aws_s3_bucket_lifecycle_configuration.lake.rule : r.status if r.id == "expire-events"]) == "Disabled"
    error_message = "0 days: the events/ expiration rule is disabled"
  }
  assert {
    condition     = aws_glue_catalog_table.events.parameters["projection.dt.range"] == "2023-06-01,NOW"
    error_message = "0 days: the projection starts at lake_projection_start_date"
  }
}

run "rejects_bad_retention" {
  command = plan

  variables {
    lake_retention_days        = 3
    dead_letter_retention_days = 0
    dynamodb_ttl_days          = 0
    sites = [
      { id = "shop", key = "pk_shop", allowed_origins = [], events_per_second = 100, burst = 500, per_ip_events_per_second = 10, per_ip_burst = 500, dynamodb_ttl_days = 0 },
    ]
  }

  expect_failures = [var.lake_retention_days, var.dead_letter_retention_days, var.dynamodb_ttl_days, var.sites]
}

run "rejects_items_that_outlive_the_lake" {
  command = plan

  variables {
    lake_retention_days = 30
    dynamodb_ttl_days   = 7
    sites = [
      { id = "shop", key = "pk_shop", allowed_origins = [], events_per_second = 100, burst = 500, per_ip_events_per_second = 10, per_ip_burst = 500, dynamodb_ttl_days = 31 },
    ]
  }

  expect_failures = [aws_dynamodb_table.events]
}

run "rejects_bad_api_type_and_batch_size" {
  command = plan

  variables {
    api_type            = "websocket"
    consumer_batch_size = 20000
  }

  expect_failures = [var.api_type, var.consumer_batch_size]
}

run "rejects_a_record_age_that_leaves_nothing_to_replay" {
  command = plan

  variables {
    stream_retention_hours          = 24
    consumer_max_record_age_seconds = 86400
  }

  expect_failures = [var.consumer_max_record_age_seconds]
}

run "rejects_a_forget_schedule_that_is_not_one" {
  command = plan

  variables {
    forget_schedule_expression = "rate(5 minutes)"
  }

  expect_failures = [var.forget_schedule_expression]
}

run "rejects_unverified_database_tls_and_unknown_architecture" {
  command = plan

  variables {
    database_ssl_root_cert = ""
    lambda_architecture    = "ppc64le"
  }

  expect_failures = [var.database_ssl_root_cert, var.lambda_architecture]
}

run "without_optional_parts" {
  command = apply

  variables {
    enable_grafana             = false
    rds_monitoring_interval    = 0
    rds_performance_insights   = false
    manage_api_gateway_account = false
    sites = [{
      id                = "shop", key = "pk_shop", allowed_origins = ["https://shop.example"],
      events_per_second = 1000, burst = 1000, per_ip_events_per_second = 100, per_ip_burst = 500
    }]
    waf_rate_limit_per_ip  = 3000
    database_ssl_root_cert = "/var/task/rds-ca-bundle.pem"
  }

  assert {
    condition     = length(aws_instance.grafana) == 0 && output.grafana_url == null
    error_message = "no Grafana host"
  }
  assert {
    condition     = length(aws_secretsmanager_secret.db_dashboard) == 0 && length(aws_vpc_security_group_ingress_rule.rds_from_grafana) == 0
    error_message = "no dashboard login or PostgreSQL rule without the Grafana host"
  }
  assert {
    condition     = length(aws_api_gateway_account.this) == 0 && length(aws_iam_role.rds_monitoring) == 0 && !aws_db_instance.postgres.performance_insights_enabled
    error_message = "optional account setting, monitoring role and Performance Insights are left out"
  }
  assert {
    condition     = jsondecode(aws_lambda_function.producer.environment[0].variables["SITES_JSON"]).sites[0].allowed_origins == ["https://shop.example"]
    error_message = "the sites (and so the CORS origins) reach the producer"
  }
  assert {
    condition     = [for r in aws_wafv2_web_acl.api[0].rule : [r.statement[0].rate_based_statement[0].limit, r.statement[0].rate_based_statement[0].aggregate_key_type]] == [[3000, "IP"]] && length(aws_wafv2_web_acl_association.api) == 1
    error_message = "the per-IP rate-based rule guards the REST API"
  }
  assert {
    condition     = aws_lambda_function.consumer.environment[0].variables["DATABASE_SSL_ROOT_CERT"] == "/var/task/rds-ca-bundle.pem"
    error_message = "CA bundle path reaches the consumer"
  }
}
