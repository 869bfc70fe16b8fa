# Public ingestion API in front of the producer Lambda.
#
# api_type = "rest" (default): API Gateway REST API imported from producer-api/openapi.yaml.
#   The file is rendered with templatefile(); it must reference the integration target as
#   ${producer_invoke_arn} (in x-amazon-apigateway-integration.uri) and escape any other
#   literal "${" as "$${". Routes and responses live in that file.
# api_type = "http": API Gateway HTTP API with the same routes, ~70% cheaper per request.
#
# Neither validates requests: openapi.yaml declares no x-amazon-apigateway-request-validator, on
# purpose. A body validator would refuse what the producer accepts: a batch with one invalid
# event is a 202 listing that event in `rejected` (a model validator refuses the whole batch),
# and a gzip body (Content-Encoding, passed as binary) is not JSON to the validator. The one
# parameter, X-Site-Key, is optional (the body's site_key may carry it), so a parameter validator
# has nothing to check. The producer validates every event (schemas/src/event.rs).

locals {
  rest = var.api_type == "rest"
  http = var.api_type == "http"

  openapi_path = "${path.module}/../producer-api/openapi.yaml"

  # Routes the HTTP API forwards to the producer (the REST API takes them from openapi.yaml).
  http_routes = ["POST /events", "OPTIONS /events", "GET /health"]

  # Per-route throttles (var.api_route_throttling), keyed by route ("POST /events"); the REST API
  # names a method "events/POST" (resource path without its leading slash, then the method).
  route_throttling = {
    for route, limits in var.api_route_throttling : route => merge(limits, {
      rest_method_path = "${trimprefix(split(" ", route)[1], "/")}/${split(" ", route)[0]}"
    })
  }

  api_execution_arn = local.rest ? one(aws_api_gateway_rest_api.producer[*].execution_arn) : one(aws_apigatewayv2_api.producer[*].execution_arn)
  api_url           = local.rest ? one(aws_api_gateway_stage.producer[*].invoke_url) : one(aws_apigatewayv2_stage.producer[*].invoke_url)
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/aws/apigateway/${var.name}-producer-api/access"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_lambda_permission" "api_invoke_producer" {
  statement_id  = "AllowApiGatewayInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.producer.function_name
  principal     = "apigateway.amazonaws.com"
  # Only this API's stage may invoke the function: .../<api-id>/<stage>/<METHOD>/<path>
  source_arn = "${local.api_execution_arn}/${var.api_stage_name}/*"
}

# --- REST API -----------------------------------------------------------------

resource "aws_api_gateway_rest_api" "producer" {
  count = local.rest ? 1 : 0

  name        = "${var.name}-producer-api"
  description = "Analytics event ingestion (producer-api/openapi.yaml)"
  body = templatefile(local.openapi_path, {
    producer_invoke_arn = aws_lambda_function.producer.invoke_arn
  })
  binary_media_types = var.rest_binary_media_types

  endpoint_configuration {
    types = ["REGIONAL"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_api_gateway_deployment" "producer" {
  count = local.rest ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.producer[0].id
  description = "openapi.yaml sha1 ${sha1(aws_api_gateway_rest_api.producer[0].body)}"

  triggers = {
    redeployment = sha1(aws_api_gateway_rest_api.producer[0].body)
    # Gateway responses take effect only in a new deployment.
    gateway_responses = sha1(jsonencode([for r in aws_api_gateway_gateway_response.json_error : [r.response_type, r.response_templates, r.response_parameters]]))
  }

  lifecycle {
    create_before_destroy = true
  }
}

# API Gateway's own answers (a route or method it lacks, throttling, its 10 MB payload limit, a
# failed or timed-out integration) in the producer's error shape: {"error": "..."} as
# application/json, like every answer of the producer itself (producer-api/openapi.yaml,
# x-gateway-responses). DEFAULT_4XX and DEFAULT_5XX stand for every response type not given its
# own; each keeps its status. $context.error.messageString is the message already quoted as a
# JSON string. (An HTTP API has no gateway responses: its own answers stay {"message": "..."}.)
resource "aws_api_gateway_gateway_response" "json_error" {
  for_each = toset(local.rest ? ["DEFAULT_4XX", "DEFAULT_5XX"] : [])

  rest_api_id   = aws_api_gateway_rest_api.producer[0].id
  response_type = each.key
  response_templates = {
    "application/json" = "{\"error\":$context.error.messageString}"
  }
  # Whatever the request's Content-Type (sendBeacon sends text/plain), the answer is JSON.
  response_parameters = {
    "gatewayresponse.header.Content-Type" = "'application/json'"
  }
}

# Execution log group that API Gateway would otherwise create unencrypted and kept forever.
resource "aws_cloudwatch_log_group" "api_execution" {
  count = local.rest ? 1 : 0

  name              = "API-Gateway-Execution-Logs_${aws_api_gateway_rest_api.producer[0].id}/${var.api_stage_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_api_gateway_stage" "producer" {
  #checkov:skip=CKV_AWS_120:Responses are per-request acknowledgements of POSTed events (and a health check); there is nothing to cache.
  #checkov:skip=CKV2_AWS_51:Clients are browsers and SDKs on the public internet; they cannot present mTLS client certificates. The backend is a Lambda proxy integration, so a backend client certificate does not apply either.
  #checkov:skip=CKV2_AWS_77:The web ACL (on by default, var.waf_rate_limit_per_ip) is a per-IP rate rule; the API runs no Java (no Log4j) and the Rust producer refuses anything outside the event schema.
  #checkov:skip=CKV_AWS_73:X-Ray traces would store every client's full IP address, which the pipeline promises never to keep; latency is covered by access logs and metrics.
  count = local.rest ? 1 : 0

  rest_api_id   = aws_api_gateway_rest_api.producer[0].id
  deployment_id = aws_api_gateway_deployment.producer[0].id
  stage_name    = var.api_stage_name
  # X-Ray segments record the caller's full IP; the pipeline promises never to store one.
  xray_tracing_enabled = false

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      requestTime        = "$context.requestTime"
      httpMethod         = "$context.httpMethod"
      resourcePath       = "$context.resourcePath"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      responseLatency    = "$context.responseLatency"
      integrationStatus  = "$context.integration.status"
      integrationLatency = "$context.integration.latency"
      errorMessage       = "$context.error.message"
      userAgent          = "$context.identity.userAgent"
    })
  }

  depends_on = [
    aws_api_gateway_account.this,
    aws_cloudwatch_log_group.api_execution,
  ]
}

resource "aws_api_gateway_method_settings" "all" {
  #checkov:skip=CKV_AWS_225:Ingestion responses must not be cached (each POST is a distinct write); caching is deliberately off.
  count = local.rest ? 1 : 0

  rest_api_id = aws_api_gateway_rest_api.producer[0].id
  stage_name  = aws_api_gateway_stage.producer[0].stage_name
  method_path = "*/*"

  settings {
    metrics_enabled        = true
    logging_level          = "ERROR"
    data_trace_enabled     = false # would log request bodies (client IPs, user agents)
    caching_enabled        = false
    throttling_rate_limit  = var.api_throttling_rate_limit
    throttling_burst_limit = var.api_throttling_burst_limit
  }
}

# Per-route throttles: a flood of health checks or preflights (each one a Lambda invocation) is
# cut off at its own, lower limit instead of spending the producer's reserved concurrency, which
# POST /events needs. A method's settings replace the stage's "*/*" ones for that method, so they
# repeat everything but the limits.
resource "aws_api_gateway_method_settings" "route" {
  #checkov:skip=CKV_AWS_225:Ingestion responses must not be cached (each POST is a distinct write); caching is deliberately off.
  for_each = local.rest ? local.route_throttling : {}

  rest_api_id = aws_api_gateway_rest_api.producer[0].id
  stage_name  = aws_api_gateway_stage.producer[0].stage_name
  method_path = each.value.rest_method_path

  settings {
    metrics_enabled        = true
    logging_level          = "ERROR"
    data_trace_enabled     = false # would log request bodies (client IPs, user agents)
    caching_enabled        = false
    throttling_rate_limit  = each.value.rate_limit
    throttling_burst_limit = each.value.burst_limit
  }

  lifecycle {
    precondition {
      condition     = contains(local.http_routes, each.key)
      error_message = "api_route_throttling: \"${each.key}\" is not a route the API serves (${join(", ", local.http_routes)})."
    }
  }

  # Every method setting is an UpdateStage call on the same stage; the provider retries the
  # ConflictException of concurrent ones, and this order spares it the stage default's.
  depends_on = [aws_api_gateway_method_settings.all]
}

# REST API logging needs a region-wide CloudWatch Logs role on the API Gateway account.
data "aws_iam_policy_document" "apigw_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["apigateway.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "apigw_cloudwatch" {
  count = local.rest && var.manage_api_gateway_account ? 1 : 0

  name               = "${var.name}-apigateway-cloudwatch"
  description        = "API Gateway (region-wide account setting) writes REST access and execution logs"
  assume_role_policy = data.aws_iam_policy_document.apigw_assume.json
}

resource "aws_iam_role_policy_attachment" "apigw_cloudwatch" {
  count = local.rest && var.manage_api_gateway_account ? 1 : 0

  role       = aws_iam_role.apigw_cloudwatch[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
}

resource "aws_api_gateway_account" "this" {
  count = local.rest && var.manage_api_gateway_account ? 1 : 0

  cloudwatch_role_arn = aws_iam_role.apigw_cloudwatch[0].arn

  depends_on = [aws_iam_role_policy_attachment.apigw_cloudwatch]
}

# --- HTTP API -----------------------------------------------------------------

resource "aws_apigatewayv2_api" "producer" {
  count = local.http ? 1 : 0

  name          = "${var.name}-producer-api"
  description   = "Analytics event ingestion (HTTP API)"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "producer" {
  count = local.http ? 1 : 0

  api_id                 = aws_apigatewayv2_api.producer[0].id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_function.producer.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 29000
}

resource "aws_apigatewayv2_route" "producer" {
  #checkov:skip=CKV_AWS_309:Public ingestion endpoint for browsers (like any analytics beacon); it is unauthenticated by design. Abuse is bounded by stage throttling, payload limits and reserved concurrency.
  for_each = toset(local.http ? local.http_routes : [])

  api_id             = aws_apigatewayv2_api.producer[0].id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.producer[0].id}"
  authorization_type = "NONE"
}

resource "aws_apigatewayv2_stage" "producer" {
  count = local.http ? 1 : 0

  api_id      = aws_apigatewayv2_api.producer[0].id
  name        = var.api_stage_name
  auto_deploy = true

  default_route_settings {
    detailed_metrics_enabled = true
    throttling_rate_limit    = var.api_throttling_rate_limit
    throttling_burst_limit   = var.api_throttling_burst_limit
  }

  # Per-route throttles (see aws_api_gateway_method_settings.route).
  dynamic "route_settings" {
    for_each = local.route_throttling

    content {
      route_key                = route_settings.key
      detailed_metrics_enabled = true
      throttling_rate_limit    = route_settings.value.rate_limit
      throttling_burst_limit   = route_settings.value.burst_limit
    }
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      requestTime        = "$context.requestTime"
      routeKey           = "$context.routeKey"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      responseLatency    = "$context.responseLatency"
      integrationStatus  = "$context.integrationStatus"
      integrationLatency = "$context.integrationLatency"
      errorMessage       = "$context.error.message"
      userAgent          = "$context.identity.userAgent"
    })
  }

  lifecycle {
    precondition {
      condition     = alltrue([for route in keys(var.api_route_throttling) : contains(local.http_routes, route)])
      error_message = "api_route_throttling names a route the API does not serve (${join(", ", local.http_routes)})."
    }
  }

  # Route settings need their routes.
  depends_on = [aws_apigatewayv2_route.producer]
}

# The global guard per client address (var.waf_rate_limit_per_ip, 0 turns it off): the producer's
# per-site and per-IP buckets are per Lambda environment, so N warm environments allow N times a
# site's rate, and stage throttling is one bucket for the whole internet, which one client can
# drain; this rule counts one IP's requests across all of them (5-minute window) and answers 429
# in the API's error shape before the request reaches the Lambda. REST APIs only: WAF cannot be
# associated with an HTTP API, whose guards are the stage and per-route throttles, the producer's
# limits and its reserved concurrency (terraform/README.md, "Protection at the door").
resource "aws_wafv2_web_acl" "api" {
  #checkov:skip=CKV2_AWS_31:WAF logging would store every blocked client's full IP address, which the pipeline promises never to keep; the rule's CloudWatch metrics count blocks.
  #checkov:skip=CKV_AWS_192:The API runs no Java (no Log4j); the Rust producer parses bodies itself and refuses anything outside the event schema.
  count = local.rest && var.waf_rate_limit_per_ip > 0 ? 1 : 0

  name  = "${var.name}-api"
  scope = "REGIONAL"

  default_action {
    allow {}
  }

  custom_response_body {
    key          = "rate_limited"
    content_type = "APPLICATION_JSON"
    content      = jsonencode({ error = "this client address is over the API's rate limit; retry later" })
  }

  rule {
    name     = "per-ip-rate"
    priority = 1

    action {
      block {
        custom_response {
          response_code            = 429
          custom_response_body_key = "rate_limited"
          response_header {
            name  = "Retry-After"
            value = "60"
          }
        }
      }
    }

    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit_per_ip
        aggregate_key_type = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-api-per-ip-rate"
      sampled_requests_enabled   = false # samples hold full client IPs
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name}-api"
    sampled_requests_enabled   = false
  }
}

resource "aws_wafv2_web_acl_association" "api" {
  count = length(aws_wafv2_web_acl.api)

  resource_arn = aws_api_gateway_stage.producer[0].arn
  web_acl_arn  = aws_wafv2_web_acl.api[0].arn
}
