# One item per stored event (written by the consumer with BatchWriteItem), expiring through TTL.

resource "aws_dynamodb_table" "events" {
  name         = local.dynamodb_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "event_id"

  attribute {
    name = "event_id"
    type = "S"
  }

  # Epoch seconds set by the consumer: received_at + DYNAMODB_TTL_DAYS.
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.main.arn
  }

  deletion_protection_enabled = var.deletion_protection
}
