# The mocked AWS provider every `terraform test` file uses (mock_provider "aws" { source = ... }):
# the computed attributes the configuration reads (ARNs, endpoints, the account, the AZs), set
# to plausible values so that policies, names and assertions see realistic strings.

mock_data "aws_caller_identity" {
  defaults = { account_id = "123456789012" }
}
mock_data "aws_secretsmanager_random_password" {
  #checkov:skip=CKV_SECRET_6:A mocked provider's placeholder for the generated password, not a secret.
  defaults = { random_password = "not-a-secret" }
}
mock_data "aws_partition" {
  defaults = { partition = "aws" }
}
mock_data "aws_availability_zones" {
  defaults = { names = ["us-east-1b", "us-east-1a", "us-east-1c"] }
}
mock_data "aws_ec2_instance_type" {
  defaults = { supported_architectures = ["arm64"] }
}
mock_data "aws_ssm_parameter" {
  defaults = { insecure_value = "ami-0123456789abcdef0" }
}
mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}
mock_resource "aws_db_instance" {
  defaults = {
    address            = "analytics-postgres.abcdefghijkl.us-east-1.rds.amazonaws.com"
    master_user_secret = [{ secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1234-AbCdEf", kms_key_id = "k", secret_status = "active" }]
  }
}
mock_resource "aws_kms_key" {
  defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555" }
}
mock_resource "aws_lambda_function" {
  defaults = {
    arn        = "arn:aws:lambda:us-east-1:123456789012:function:f"
    invoke_arn = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:f/invocations"
  }
}
mock_resource "aws_cloudwatch_event_rule" {
  defaults = { arn = "arn:aws:events:us-east-1:123456789012:rule/analytics-compactor" }
}
mock_resource "aws_api_gateway_rest_api" {
  defaults = { execution_arn = "arn:aws:execute-api:us-east-1:123456789012:abc123" }
}
mock_resource "aws_api_gateway_stage" {
  defaults = { arn = "arn:aws:apigateway:us-east-1::/restapis/abc123/stages/prod" }
}
mock_resource "aws_wafv2_web_acl" {
  defaults = { arn = "arn:aws:wafv2:us-east-1:123456789012:regional/webacl/analytics-api/11111111-2222-3333-4444-555555555555" }
}
mock_resource "aws_apigatewayv2_api" {
  defaults = { execution_arn = "arn:aws:execute-api:us-east-1:123456789012:def456" }
}
mock_resource "aws_instance" {
  defaults = { public_ip = "198.51.100.10" }
}
mock_resource "aws_iam_role" {
  defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
}
mock_resource "aws_sns_topic" {
  defaults = { arn = "arn:aws:sns:us-east-1:123456789012:analytics-alarms" }
}
mock_resource "aws_sqs_queue" {
  defaults = { arn = "arn:aws:sqs:us-east-1:123456789012:analytics-stream-consumer-failures" }
}
mock_resource "aws_kinesis_stream" {
  defaults = { arn = "arn:aws:kinesis:us-east-1:123456789012:stream/analytics-events" }
}
mock_resource "aws_cloudwatch_log_group" {
  defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:mock" }
}
mock_resource "aws_s3_bucket" {
  defaults = { arn = "arn:aws:s3:::mock-bucket" }
}
mock_resource "aws_dynamodb_table" {
  defaults = { arn = "arn:aws:dynamodb:us-east-1:123456789012:table/analytics-events" }
}
mock_resource "aws_secretsmanager_secret" {
  defaults = { arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:analytics/grafana-admin-AbCdEf" }
}
mock_resource "aws_db_proxy_default_target_group" {
  defaults = { name = "default" }
}
mock_resource "aws_db_proxy" {
  defaults = { endpoint = "analytics-postgres.proxy-abcdefghijkl.us-east-1.rds.amazonaws.com" }
}
mock_resource "aws_iam_instance_profile" {
  defaults = { arn = "arn:aws:iam::123456789012:instance-profile/mock" }
}
