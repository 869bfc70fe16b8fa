# `terraform test` of the door and the operator's reach (issue #22, part 4), beside
# plan.tftest.hcl and with the same mocked AWS provider (tests/mocks/): the per-IP WAF rule and
# the per-route throttles, Grafana reachable only through SSM, RDS Multi-AZ with storage
# autoscaling and Performance Insights, and only the interface endpoints the private subnets call.

mock_provider "aws" {
  source = "./tests/mocks"
}

run "production_defaults" {
  command = apply

  assert {
    condition     = aws_db_instance.postgres.multi_az && aws_db_instance.postgres.performance_insights_enabled
    error_message = "RDS is Multi-AZ with Performance Insights by default"
  }
  assert {
    condition     = aws_db_instance.postgres.max_allocated_storage == 100 && aws_db_instance.postgres.max_allocated_storage > aws_db_instance.postgres.allocated_storage
    error_message = "storage autoscaling is on, from 20 GB up to 100 GB"
  }
  assert {
    condition = (
      length(aws_wafv2_web_acl.api) == 1
      && [for r in aws_wafv2_web_acl.api[0].rule : [r.statement[0].rate_based_statement[0].limit, r.statement[0].rate_based_statement[0].aggregate_key_type, r.action[0].block[0].custom_response[0].response_code]] == [[3000, "IP", 429]]
      && aws_wafv2_web_acl_association.api[0].resource_arn == aws_api_gateway_stage.producer[0].arn
    )
    error_message = "by default a per-IP rate-based rule (3000 requests per 5 minutes, then 429) guards the REST API's stage"
  }
  assert {
    condition = (
      { for k, m in aws_api_gateway_method_settings.route : m.method_path => [m.settings[0].throttling_rate_limit, m.settings[0].throttling_burst_limit] }
      == { "events/OPTIONS" = [100, 200], "health/GET" = [10, 20] }
    )
    error_message = "preflights and health checks have their own, lower throttles; POST /events keeps the stage's"
  }
  assert {
    condition = alltrue([for m in aws_api_gateway_method_settings.route :
    m.settings[0].metrics_enabled && !m.settings[0].data_trace_enabled && !m.settings[0].caching_enabled && m.settings[0].logging_level == "ERROR"])
    error_message = "a route's settings replace the stage's for that method: they must keep metrics on and data tracing and caching off"
  }
  assert {
    condition     = keys(aws_vpc_endpoint.interface) == ["secretsmanager"]
    error_message = "the only interface endpoint is the one the consumer, the compactor and RDS Proxy call"
  }
  assert {
    condition     = toset([aws_vpc_endpoint.s3.vpc_endpoint_type, aws_vpc_endpoint.dynamodb.vpc_endpoint_type]) == toset(["Gateway"])
    error_message = "S3 and DynamoDB through the free gateway endpoints"
  }
}

run "grafana_only_through_ssm" {
  command = apply

  assert {
    condition     = output.grafana_url == "http://localhost:3000" && output.grafana_tunnel_command == "aws ssm start-session --region us-east-1 --target ${aws_instance.grafana[0].id} --document-name AWS-StartPortForwardingSession --parameters portNumber=3000,localPortNumber=3000"
    error_message = "Grafana is reached on localhost through an SSM port-forwarding session to the host"
  }
  assert {
    condition     = aws_iam_role_policy_attachment.grafana_ssm[0].policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "the host's agent must be allowed to serve SSM sessions"
  }
  assert {
    condition     = aws_vpc_security_group_egress_rule.grafana_https[0].to_port == 443 && aws_instance.grafana[0].metadata_options[0].http_tokens == "required"
    error_message = "the agent connects out on 443; IMDSv2 only"
  }
}

run "single_az_without_autoscaling" {
  command = apply

  variables {
    rds_multi_az                 = false
    rds_max_allocated_storage_gb = 0
  }

  assert {
    condition     = !aws_db_instance.postgres.multi_az && aws_db_instance.postgres.max_allocated_storage == 0
    error_message = "rds_multi_az and rds_max_allocated_storage_gb reach the instance"
  }
}

run "rejects_an_autoscaling_ceiling_below_the_volume" {
  command = plan

  variables {
    rds_allocated_storage_gb     = 200
    rds_max_allocated_storage_gb = 100
  }

  expect_failures = [aws_db_instance.postgres]
}

run "rejects_an_autoscaling_ceiling_gp3_cannot_have" {
  command = plan

  variables {
    rds_allocated_storage_gb     = 5
    rds_max_allocated_storage_gb = 10
  }

  expect_failures = [var.rds_max_allocated_storage_gb]
}

run "http_api_throttles_per_route_without_waf" {
  command = apply

  variables {
    api_type = "http"
    api_route_throttling = {
      "POST /events" = { rate_limit = 500, burst_limit = 800 }
      "GET /health"  = { rate_limit = 5, burst_limit = 5 }
    }
  }

  assert {
    condition     = length(aws_wafv2_web_acl.api) == 0 && length(aws_wafv2_web_acl_association.api) == 0
    error_message = "WAF cannot be associated with an HTTP API: no web ACL is created for one"
  }
  assert {
    condition = (
      { for r in aws_apigatewayv2_stage.producer[0].route_settings : r.route_key => [r.throttling_rate_limit, r.throttling_burst_limit] }
      == { "POST /events" = [500, 800], "GET /health" = [5, 5] }
    )
    error_message = "the HTTP API stage carries the per-route throttles"
  }
  assert {
    condition     = aws_apigatewayv2_stage.producer[0].default_route_settings[0].throttling_rate_limit == 1000
    error_message = "routes left out keep the stage-wide limit"
  }
}

run "waf_off" {
  command = plan

  variables {
    waf_rate_limit_per_ip = 0
  }

  assert {
    condition     = length(aws_wafv2_web_acl.api) == 0 && length(aws_wafv2_web_acl_association.api) == 0
    error_message = "waf_rate_limit_per_ip = 0 creates no web ACL"
  }
}

run "rejects_a_route_the_api_does_not_serve" {
  command = plan

  variables {
    api_route_throttling = { "DELETE /events" = { rate_limit = 1, burst_limit = 1 } }
  }

  expect_failures = [aws_api_gateway_method_settings.route]
}

run "rejects_malformed_route_throttles" {
  command = plan

  variables {
    api_route_throttling = { "events" = { rate_limit = -1, burst_limit = 1.5 } }
  }

  expect_failures = [var.api_route_throttling]
}
