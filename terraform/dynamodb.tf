# One item per stored event (written by the consumer with BatchWriteItem), expiring through TTL.

locals {
  # The global secondary indexes `forget` (lake-tools, forget.tf) queries to find one visitor's
  # items: index name => its hash key. Hash key only, projecting `site` (forget's Query filters
  # on it, so a visitor ID seen on two sites is erased on the one the request names). Sparse:
  # DynamoDB indexes only items that have the key attribute, and the consumer omits an absent
  # or empty ID (schemas/src/dynamo.rs). scripts/bootstrap_resources.py creates the same ones
  # locally. Adding them to an existing table is an online backfill: terraform/README.md,
  # "DynamoDB indexes for erasure".
  dynamodb_erasure_indexes = {
    by_anonymous_id = "anonymous_id"
    by_user_id      = "user_id"
  }
}

resource "aws_dynamodb_table" "events" {
  name         = local.dynamodb_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "event_id"

  attribute {
    name = "event_id"
    type = "S"
  }

  dynamic "attribute" {
    for_each = local.dynamodb_erasure_indexes
    content {
      name = attribute.value
      type = "S"
    }
  }

  # Every item write also writes each index the item appears in (one more write request unit
  # per index: one for an anonymous visitor, two with a user_id); see the README's "Cost".
  dynamic "global_secondary_index" {
    for_each = local.dynamodb_erasure_indexes
    content {
      name               = global_secondary_index.key
      hash_key           = global_secondary_index.value
      projection_type    = "INCLUDE"
      non_key_attributes = ["site"]
    }
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
