output "api_url" {
  description = "Base URL of the ingestion API (POST <api_url>/events, GET <api_url>/health)."
  value       = local.api_url
}

output "grafana_url" {
  description = "Grafana UI on this machine while grafana_tunnel_command runs (the host has no inbound rule)."
  value       = var.enable_grafana ? "http://localhost:3000" : null
}

output "grafana_tunnel_command" {
  description = "SSM port-forwarding session to the Grafana host: run it, then open grafana_url (needs the Session Manager plugin and ssm:StartSession)."
  value       = var.enable_grafana ? "aws ssm start-session --region ${local.region} --target ${aws_instance.grafana[0].id} --document-name AWS-StartPortForwardingSession --parameters portNumber=3000,localPortNumber=3000" : null
}

output "grafana_instance_id" {
  description = "Grafana host, for `aws ssm start-session --target`."
  value       = one(aws_instance.grafana[*].id)
}

output "grafana_admin_secret_arn" {
  description = "Secrets Manager secret holding the Grafana admin password (set by the host at first boot)."
  value       = one(aws_secretsmanager_secret.grafana_admin[*].arn)
}

output "grafana_db_secret_arn" {
  description = "Secrets Manager secret with the Site analytics dashboard's PostgreSQL login (rds_dashboard_username and its password); README.md, \"Site analytics dashboard\"."
  value       = one(aws_secretsmanager_secret.db_dashboard[*].arn)
}

output "stream_name" {
  description = "Kinesis stream (STREAM_NAME)."
  value       = aws_kinesis_stream.events.name
}

output "lake_bucket" {
  description = "Lake bucket (LAKE_BUCKET)."
  value       = aws_s3_bucket.lake.id
}

output "glue_table" {
  description = "Glue/Athena table, database.table."
  value       = "${aws_glue_catalog_database.lake.name}.${aws_glue_catalog_table.events.name}"
}

output "athena_workgroup" {
  description = "Athena workgroup to run queries in."
  value       = aws_athena_workgroup.lake.name
}

output "dynamodb_table" {
  description = "DynamoDB table (DYNAMODB_TABLE)."
  value       = aws_dynamodb_table.events.name
}

output "rds_endpoint" {
  description = "PostgreSQL host:port the consumer connects to (the RDS Proxy when enabled)."
  value       = "${local.consumer_environment.DATABASE_HOST}:${aws_db_instance.postgres.port}"
}

output "rds_instance_endpoint" {
  description = "The RDS instance itself, host:port."
  value       = aws_db_instance.postgres.endpoint
}

output "db_secret_arn" {
  description = "RDS-managed Secrets Manager secret with the master username/password: the migrator (DATABASE_MIGRATOR_SECRET_ARN)."
  value       = local.db_secret_arn
}

output "db_app_secret_arn" {
  description = "Secrets Manager secret of the application's login, DML only (DATABASE_SECRET_ARN of the consumer and compactor)."
  value       = local.db_app_secret_arn
}

output "consumer_failures_queue_url" {
  description = "SQS queue receiving descriptors of batches the consumer gave up on."
  value       = aws_sqs_queue.consumer_failures.url
}

output "alarm_topic_arn" {
  description = "SNS topic all alarms notify."
  value       = aws_sns_topic.alarms.arn
}

output "producer_function_name" {
  description = "producer-api Lambda."
  value       = aws_lambda_function.producer.function_name
}

output "consumer_function_name" {
  description = "stream-consumer Lambda."
  value       = aws_lambda_function.consumer.function_name
}

output "kms_key_arn" {
  description = "Customer-managed key encrypting the stack's data."
  value       = aws_kms_key.main.arn
}
