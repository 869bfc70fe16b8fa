# One customer-managed key encrypts the stream, lake, table, queue, topic, logs, RDS storage,
# its managed secret and Performance Insights. IAM policies (lambda.tf, observability.tf, rds.tf)
# grant each role only the kms actions it needs on this key; the key policy delegates to IAM
# and lets the services that call KMS as themselves (CloudWatch Logs; CloudWatch alarms and AWS
# Budgets publishing to the encrypted SNS topic) use it.

resource "aws_kms_key" "main" {
  description             = "${var.name}: analytics pipeline data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncryptsThisStacksLogGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
      # SNS asks KMS for the topic's data key with the publisher's permissions, so the two
      # services that publish to the alarm topic as themselves need the key too; the encryption
      # context SNS sets limits both grants to messages for that one topic.
      {
        Sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
        Condition = {
          StringEquals = { "kms:EncryptionContext:aws:sns:topicArn" = local.alarm_topic_arn }
        }
      },
      {
        Sid       = "BudgetsPublishToEncryptedTopic"
        Effect    = "Allow"
        Principal = { Service = "budgets.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
        Condition = {
          StringEquals = { "kms:EncryptionContext:aws:sns:topicArn" = local.alarm_topic_arn }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}
