# Shared lookups and names used by every other file.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# Identity-pinned AZ lookup: only the region's lettered zones (or the ones named in
# var.availability_zones) can ever be returned, so a zone added later, a Local Zone or a zone
# changing state never shifts the subnets. The first two, sorted, are used.
data "aws_availability_zones" "selected" {
  filter {
    name   = "zone-name"
    values = length(var.availability_zones) > 0 ? var.availability_zones : [for letter in ["a", "b", "c", "d", "e", "f"] : "${var.aws_region}${letter}"]
  }

  filter {
    name   = "zone-type"
    values = ["availability-zone"]
  }
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = var.aws_region

  # Two AZs: the consumer Lambda and RDS (subnet group) both need subnets in at least two.
  azs = slice(sort(data.aws_availability_zones.selected.names), 0, 2)

  # Resource names. Buckets are global, so their default names carry the account and region.
  stream_name         = coalesce(var.stream_name, "${var.name}-events")
  dynamodb_table_name = coalesce(var.dynamodb_table_name, "${var.name}-events")
  lake_bucket_name    = coalesce(var.lake_bucket_name, "${var.name}-lake-${local.account_id}-${local.region}")
  athena_bucket_name  = "${var.name}-athena-results-${local.account_id}-${local.region}"
  logs_bucket_name    = "${var.name}-access-logs-${local.account_id}-${local.region}"
  glue_database_name  = coalesce(var.glue_database_name, replace("${var.name}_lake", "-", "_"))

  producer_function_name = "${var.name}-producer-api"
  consumer_function_name = "${var.name}-stream-consumer"
  rds_identifier         = "${var.name}-postgres"

  # Prefixes the consumer writes under (ARCHITECTURE.md).
  lake_events_prefix      = "events/"
  lake_dead_letter_prefix = "dead-letter/"
  # Grafana provisioning files uploaded for the observability host.
  lake_ops_prefix = "ops/grafana/"
}
