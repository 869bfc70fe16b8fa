# One item per stored event (written by the consumer with BatchWriteItem), expiring through TTL.

# No secondary index: forget (forget.tf) gets a visitor's event IDs from the lake rows it rewrites
# and deletes the items by key, and an index would add a write unit per event (terraform/README.md,
# "DynamoDB: no index for erasure"). An apply to a table made with the former by_anonymous_id and
# by_user_id indexes drops them, online and free.
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

  lifecycle {
    # Forget finds an item through its event's lake row: an item that outlives the row cannot be
    # erased any more.
    precondition {
      condition     = var.lake_retention_days == 0 || local.longest_item_lifetime_days <= var.lake_retention_days
      error_message = "DynamoDB items (dynamodb_ttl_days and every site's dynamodb_ttl_days) must not outlive the lake (lake_retention_days): forget finds items through their lake rows."
    }
  }
}

locals {
  longest_item_lifetime_days = max(concat([var.dynamodb_ttl_days], [for s in var.sites : s.dynamodb_ttl_days if s.dynamodb_ttl_days != null])...)
}
