# Inputs. Every default is safe to apply as-is; the README has the same list as a table.

# --- General ------------------------------------------------------------------

variable "aws_region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Prefix for every resource name (lowercase letters, digits and hyphens)."
  type        = string
  default     = "analytics"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags for every resource (merged into the provider's default_tags)."
  type        = map(string)
  default     = {}
}

variable "availability_zones" {
  description = "Exactly two AZs for the private and public subnets; empty = the first two, alphabetically, of the region's zones a-f."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == 2
    error_message = "availability_zones must be empty or list exactly two zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; cut into four subnets of 1/16 of it each (two private, two public)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(regex("^[0-9.]+/1[6-8]$", var.vpc_cidr)) && can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be a valid IPv4 CIDR from /16 to /18."
  }
}

variable "flow_log_traffic_type" {
  description = "VPC flow logs: ALL, ACCEPT or REJECT."
  type        = string
  default     = "ALL"

  validation {
    condition     = contains(["ALL", "ACCEPT", "REJECT"], var.flow_log_traffic_type)
    error_message = "flow_log_traffic_type must be ALL, ACCEPT or REJECT."
  }
}

variable "deletion_protection" {
  description = "Deletion protection on the RDS instance and the DynamoDB table. Set false (and apply) before `terraform destroy`."
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete non-empty S3 buckets and the Athena workgroup's saved queries. Keep false outside throwaway stacks."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of every CloudWatch log group created here (Lambda, API access, flow logs, RDS)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention value CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the customer-managed KMS key is deleted after destroy (7-30)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

# --- Kinesis ------------------------------------------------------------------

variable "stream_name" {
  description = "Kinesis stream name; null = \"<name>-events\"."
  type        = string
  default     = null
}

variable "stream_mode" {
  description = "Kinesis capacity mode: ON_DEMAND or PROVISIONED."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "PROVISIONED"], var.stream_mode)
    error_message = "stream_mode must be ON_DEMAND or PROVISIONED."
  }
}

variable "stream_shard_count" {
  description = "Shards when stream_mode = PROVISIONED (1 shard = 1 MB/s or 1000 records/s in)."
  type        = number
  default     = 2

  validation {
    condition     = var.stream_shard_count >= 1
    error_message = "stream_shard_count must be at least 1."
  }
}

variable "stream_retention_hours" {
  description = "Kinesis retention in hours (24-8760). Beyond 24 h costs extra (per shard-hour provisioned, per GB-month on-demand)."
  type        = number
  default     = 24

  validation {
    condition     = var.stream_retention_hours >= 24 && var.stream_retention_hours <= 8760
    error_message = "stream_retention_hours must be between 24 and 8760."
  }
}

# --- Lambda -------------------------------------------------------------------

variable "lambda_architecture" {
  description = "Lambda CPU architecture; must match the build target (arm64 = aarch64-unknown-linux-gnu, x86_64 = x86_64-unknown-linux-gnu)."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "producer_zip" {
  description = "Path of the producer-api Lambda zip (built by `make package`), relative to this directory or absolute."
  type        = string
  default     = "../target/lambda/producer-api/bootstrap.zip"
}

variable "consumer_zip" {
  description = "Path of the stream-consumer Lambda zip (built by `make package`, with the RDS CA bundle), relative to this directory or absolute."
  type        = string
  default     = "../target/lambda/stream-consumer/bootstrap.zip"
}

variable "compactor_zip" {
  description = "Path of the compactor Lambda zip (built by `make package`, with the RDS CA bundle), relative to this directory or absolute."
  type        = string
  default     = "../target/lambda/compactor/bootstrap.zip"
}

variable "forget_zip" {
  description = "Path of the forget Lambda zip (built by `make package`, with the RDS CA bundle), relative to this directory or absolute."
  type        = string
  default     = "../target/lambda/forget/bootstrap.zip"
}

variable "forget_schedule_expression" {
  description = "EventBridge schedule of the forget Lambda, which processes every pending erasure request (requests are also processed when one is filed by invoking the function). Daily by default; at most hourly."
  type        = string
  default     = "cron(40 2 * * ? *)"

  validation {
    condition     = can(regex("^(cron\\(.+\\)|rate\\(([0-9]+) (hour|hours|day|days)\\))$", var.forget_schedule_expression))
    error_message = "forget_schedule_expression must be an EventBridge cron(...) or a rate(N hours|days) expression (forget runs at most hourly: each run rewrites the lake objects its requests touch)."
  }
}

variable "producer_memory_mb" {
  description = "Producer Lambda memory (MB); CPU scales with it."
  type        = number
  default     = 256
}

variable "producer_timeout_seconds" {
  description = "Producer Lambda timeout; keep under API Gateway's 29 s integration timeout."
  type        = number
  default     = 10

  validation {
    condition     = var.producer_timeout_seconds >= 1 && var.producer_timeout_seconds <= 29
    error_message = "producer_timeout_seconds must be between 1 and 29."
  }
}

variable "producer_reserved_concurrency" {
  description = "Reserved concurrency of the producer (caps cost and Kinesis pressure); -1 = no reservation."
  type        = number
  default     = 100

  validation {
    condition     = var.producer_reserved_concurrency >= -1
    error_message = "producer_reserved_concurrency must be -1 or a non-negative number."
  }
}

variable "consumer_memory_mb" {
  description = "Consumer Lambda memory (MB). A 10000-record batch is decoded, deduplicated and written as Parquet in memory."
  type        = number
  default     = 1024
}

variable "consumer_timeout_seconds" {
  description = "Consumer Lambda timeout; must exceed SINK_BUDGET_MS plus decode time."
  type        = number
  default     = 120

  validation {
    condition     = var.consumer_timeout_seconds >= 10 && var.consumer_timeout_seconds <= 900
    error_message = "consumer_timeout_seconds must be between 10 and 900."
  }
}

variable "consumer_reserved_concurrency" {
  description = "Reserved concurrency of the consumer; needs at least shards x parallelization_factor. -1 = no reservation."
  type        = number
  default     = 20

  validation {
    condition     = var.consumer_reserved_concurrency >= -1
    error_message = "consumer_reserved_concurrency must be -1 or a non-negative number."
  }
}

variable "rust_log" {
  description = "RUST_LOG for both functions."
  type        = string
  default     = "info"
}

variable "sites" {
  description = "Sites allowed to write (SITES_JSON, see README \"Sites and write keys\"): id stored with the events, public key pk_..., browser origins (port may be *), and per-producer-instance limits in events/s and burst (bursts >= 500, one full batch). Empty = every request is 401."
  type = list(object({
    id                       = string
    key                      = string
    allowed_origins          = list(string)
    events_per_second        = number
    burst                    = number
    per_ip_events_per_second = number
    per_ip_burst             = number
    # Lifetime of the site's DynamoDB items in days; null = dynamodb_ttl_days.
    dynamodb_ttl_days = optional(number)
  }))
  default = []
  validation {
    # Lambda allows 4 KB of environment variables in all; the rest of the producer's needs ~300 bytes.
    condition     = length(jsonencode({ sites = var.sites })) <= 3500
    error_message = "The sites do not fit in the producer's 4 KB Lambda environment; ship a sites file in the package (SITES_CONFIG) instead."
  }
  validation {
    condition     = alltrue([for s in var.sites : s.burst >= 500 && s.per_ip_burst >= 500 && s.events_per_second > 0 && s.per_ip_events_per_second > 0])
    error_message = "Rates must be above 0 and bursts at least 500 (one full batch)."
  }
  validation {
    condition     = alltrue([for s in var.sites : s.dynamodb_ttl_days == null || try(s.dynamodb_ttl_days >= 1 && floor(s.dynamodb_ttl_days) == s.dynamodb_ttl_days, false)])
    error_message = "A site's dynamodb_ttl_days must be a whole number of days, at least 1 (or null for dynamodb_ttl_days)."
  }
}

variable "default_site_key" {
  description = "DEFAULT_SITE_KEY: the site of requests that name no key (single-site, keyless use); empty = a key is required."
  type        = string
  default     = ""
}

variable "waf_rate_limit_per_ip" {
  description = "Requests one client IP may make to the REST API per 5 minutes before a WAF rate-based rule answers 429: the global guard above the producer's per-instance limits (default 3000, 10/s on average; raise it if many visitors share one address, e.g. carrier NAT). 0 = no web ACL (it costs $6/month plus $0.60 per million requests). HTTP APIs cannot have a web ACL; stage and per-route throttling are their guard."
  type        = number
  default     = 3000
  validation {
    condition     = var.waf_rate_limit_per_ip == 0 || (var.waf_rate_limit_per_ip >= 10 && var.waf_rate_limit_per_ip <= 2000000000)
    error_message = "0 (off) or 10..2,000,000,000 requests per 5 minutes (WAF's range)."
  }
}

variable "publish_budget_ms" {
  description = "PUBLISH_BUDGET_MS: producer's PutRecords retry budget per request."
  type        = number
  default     = 2000
}

variable "dedup_window_hours" {
  description = "DEDUP_WINDOW_HOURS: consumer's cross-batch dedup window."
  type        = number
  default     = 24
}

variable "dynamodb_ttl_days" {
  description = "DYNAMODB_TTL_DAYS: lifetime of a DynamoDB item (expires_at) of a site without its own dynamodb_ttl_days (var.sites)."
  type        = number
  default     = 30

  validation {
    condition     = var.dynamodb_ttl_days >= 1
    error_message = "dynamodb_ttl_days must be at least 1."
  }
}

variable "dynamodb_concurrency" {
  description = "DYNAMODB_CONCURRENCY: consumer's parallel BatchWriteItem calls."
  type        = number
  default     = 16
}

variable "sink_budget_ms" {
  description = "SINK_BUDGET_MS: consumer's retry budget for sink writes per batch."
  type        = number
  default     = 20000
}

variable "database_ssl_root_cert" {
  description = "DATABASE_SSL_ROOT_CERT of the consumer and the compactor: absolute path of the RDS CA bundle their zips ship (`make package` puts it at /var/task/global-bundle.pem); PostgreSQL TLS is verify-full against it."
  type        = string
  default     = "/var/task/global-bundle.pem"

  validation {
    condition     = startswith(var.database_ssl_root_cert, "/")
    error_message = "database_ssl_root_cert must be an absolute path (the CA bundle inside the Lambda package, e.g. /var/task/global-bundle.pem): without it TLS to RDS is not verified."
  }
}

# --- Event source mapping (Kinesis -> consumer) ---------------------------------

variable "consumer_batch_size" {
  description = "Records per consumer invocation (1-10000). A record packs up to 64 KiB of events (a 50-event request is one record); Lambda also caps an invocation at 6 MB of payload."
  type        = number
  default     = 10000

  validation {
    condition     = var.consumer_batch_size >= 1 && var.consumer_batch_size <= 10000
    error_message = "consumer_batch_size must be between 1 and 10000."
  }
}

variable "consumer_batching_window_seconds" {
  description = "Longest wait to fill a batch (0-300 s)."
  type        = number
  default     = 5

  validation {
    condition     = var.consumer_batching_window_seconds >= 0 && var.consumer_batching_window_seconds <= 300
    error_message = "consumer_batching_window_seconds must be between 0 and 300."
  }
}

variable "consumer_parallelization_factor" {
  description = "Concurrent batches per shard (1-10). Order is kept per partition key."
  type        = number
  default     = 1

  validation {
    condition     = var.consumer_parallelization_factor >= 1 && var.consumer_parallelization_factor <= 10
    error_message = "consumer_parallelization_factor must be between 1 and 10."
  }
}

variable "consumer_max_retry_attempts" {
  description = "Retries of a failing batch before it goes to the on-failure queue (-1 = until the record expires)."
  type        = number
  default     = 5

  validation {
    condition     = var.consumer_max_retry_attempts >= -1 && var.consumer_max_retry_attempts <= 10000
    error_message = "consumer_max_retry_attempts must be between -1 and 10000."
  }
}

variable "consumer_max_record_age_seconds" {
  description = "Records older than this are sent to the on-failure queue instead of processed (-1 or 60-604800, at most 3/4 of stream_retention_hours so `replay` can still read them)."
  type        = number
  default     = 64800

  validation {
    condition     = var.consumer_max_record_age_seconds == -1 || (var.consumer_max_record_age_seconds >= 60 && var.consumer_max_record_age_seconds <= 604800)
    error_message = "consumer_max_record_age_seconds must be -1 or between 60 and 604800."
  }

  # A batch given up on for its age is described on the on-failure queue while its records are
  # still in the stream only if the age limit is below the retention: at the old default (24 h
  # of a 24 h stream) the records expired as the descriptor arrived, and `replay` had nothing to
  # read. A quarter of the retention (6 h of the default 24 h) is left to replay in.
  validation {
    condition     = var.consumer_max_record_age_seconds == -1 || var.consumer_max_record_age_seconds <= var.stream_retention_hours * 2700
    error_message = "consumer_max_record_age_seconds must leave a quarter of stream_retention_hours (at most stream_retention_hours × 2700 s) to replay the batches it gives up on."
  }
}

variable "consumer_starting_position" {
  description = "Where a new event source mapping starts reading: TRIM_HORIZON or LATEST."
  type        = string
  default     = "TRIM_HORIZON"

  validation {
    condition     = contains(["TRIM_HORIZON", "LATEST"], var.consumer_starting_position)
    error_message = "consumer_starting_position must be TRIM_HORIZON or LATEST."
  }
}

variable "dlq_retention_seconds" {
  description = "How long failed-batch descriptors stay in the on-failure SQS queue (max 14 days)."
  type        = number
  default     = 1209600

  validation {
    condition     = var.dlq_retention_seconds >= 60 && var.dlq_retention_seconds <= 1209600
    error_message = "dlq_retention_seconds must be between 60 and 1209600."
  }
}

# --- API Gateway --------------------------------------------------------------

variable "api_type" {
  description = "\"rest\" (API Gateway REST API from producer-api/openapi.yaml) or \"http\" (API Gateway HTTP API, cheaper, fewer features)."
  type        = string
  default     = "rest"

  validation {
    condition     = contains(["rest", "http"], var.api_type)
    error_message = "api_type must be \"rest\" or \"http\"."
  }
}

variable "api_stage_name" {
  description = "API stage name (part of api_url)."
  type        = string
  default     = "v1"
}

variable "api_throttling_rate_limit" {
  description = "Stage-wide steady-state request rate limit (requests/second)."
  type        = number
  default     = 1000
}

variable "api_throttling_burst_limit" {
  description = "Stage-wide burst limit (requests)."
  type        = number
  default     = 2000
}

variable "rest_binary_media_types" {
  description = "REST API binary media types. \"*/*\" makes API Gateway pass gzip (Content-Encoding) bodies to Lambda base64-encoded instead of mangling them as text."
  type        = list(string)
  default     = ["*/*"]
}

variable "manage_api_gateway_account" {
  description = "Set the region-wide API Gateway CloudWatch Logs role (needed for REST access/execution logs). Set false if another stack already manages it."
  type        = bool
  default     = true
}

# --- Lake (S3, Glue, Athena) --------------------------------------------------

variable "lake_bucket_name" {
  description = "Lake bucket name; null = \"<name>-lake-<account>-<region>\"."
  type        = string
  default     = null
}

variable "dead_letter_retention_days" {
  description = "Days before objects under dead-letter/ expire (1-3650); the dead_letter table's partition projection starts that many days back."
  type        = number
  default     = 30

  validation {
    condition     = var.dead_letter_retention_days >= 1 && var.dead_letter_retention_days <= 3650
    error_message = "dead_letter_retention_days must be between 1 and 3650."
  }
}

variable "lake_retention_days" {
  description = "Days before objects under events/ expire (7-36500; 0 = never), and how far back the events table's partition projection reaches, so Athena never lists an expired day. Default 395: 13 months, for year-over-year comparisons of a whole month."
  type        = number
  default     = 395

  validation {
    # A week at least: the compactor rewrites the last 24 hours, and a consumer catching up on a
    # backlog still writes into hours as old as the stream keeps records.
    condition     = var.lake_retention_days == 0 || (var.lake_retention_days >= 7 && var.lake_retention_days <= 36500 && floor(var.lake_retention_days) == var.lake_retention_days)
    error_message = "lake_retention_days must be 0 (never expire) or a whole number of days between 7 and 36500."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days before noncurrent (overwritten or deleted) object versions expire, in every bucket."
  type        = number
  default     = 30
}

variable "athena_results_retention_days" {
  description = "Days before Athena query results expire."
  type        = number
  default     = 30
}

variable "access_log_retention_days" {
  description = "Days before S3 server access logs expire."
  type        = number
  default     = 365
}

variable "glue_database_name" {
  description = "Glue database; null = \"<name>_lake\" (hyphens become underscores)."
  type        = string
  default     = null
}

variable "lake_projection_start_date" {
  description = "First dt (yyyy-MM-dd) that the events table's partition projection enumerates when lake_retention_days = 0 (otherwise the projection starts lake_retention_days back)."
  type        = string
  default     = "2024-01-01"

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}$", var.lake_projection_start_date))
    error_message = "lake_projection_start_date must be yyyy-MM-dd."
  }
}

variable "athena_bytes_scanned_cutoff" {
  description = "Athena per-query scan limit in bytes (min 10 MB); queries above it are cancelled. Default 10 GiB (~$0.05)."
  type        = number
  default     = 10737418240

  validation {
    condition     = var.athena_bytes_scanned_cutoff >= 10485760
    error_message = "athena_bytes_scanned_cutoff must be at least 10485760 (10 MB)."
  }
}

# --- DynamoDB -----------------------------------------------------------------

variable "dynamodb_table_name" {
  description = "DynamoDB table name; null = \"<name>-events\"."
  type        = string
  default     = null
}

# --- PostgreSQL (RDS) ---------------------------------------------------------

variable "rds_engine_version" {
  description = "PostgreSQL major (e.g. \"16\") or major.minor; minor upgrades are automatic."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^1[56](\\.[0-9]+)?$", var.rds_engine_version))
    error_message = "rds_engine_version must be PostgreSQL 15 or 16 (\"16\" or \"16.4\")."
  }
}

variable "rds_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.micro"
}

variable "rds_allocated_storage_gb" {
  description = "Initial gp3 storage (GB)."
  type        = number
  default     = 20
}

variable "rds_max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling (GB): RDS grows the volume when free space runs low, up to this; 0 = no autoscaling. Must be at least rds_allocated_storage_gb. The dedup ledger keeps ~130 bytes per event for the dedup window plus a day (docs/scaling.md)."
  type        = number
  default     = 100

  validation {
    condition     = var.rds_max_allocated_storage_gb == 0 || (var.rds_max_allocated_storage_gb >= 20 && var.rds_max_allocated_storage_gb <= 65536)
    error_message = "rds_max_allocated_storage_gb must be 0 (no autoscaling) or 20..65536 GB (gp3's range)."
  }
}

variable "rds_database_name" {
  description = "Initial database (DATABASE_NAME)."
  type        = string
  default     = "analytics"
}

variable "rds_master_username" {
  description = "Master user; its password is generated and kept in Secrets Manager by RDS. It owns the schema and is used only to apply migrations."
  type        = string
  default     = "analytics_admin"
}

variable "rds_app_username" {
  description = "The consumer's and compactor's login role (DML on the pipeline's tables only); the consumer creates it at its first start with the password of the db_app secret."
  type        = string
  default     = "analytics_app"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.rds_app_username)) && var.rds_app_username != var.rds_master_username
    error_message = "rds_app_username must be a lower-case PostgreSQL identifier, different from rds_master_username."
  }
}

variable "rds_dashboard_username" {
  description = "Grafana's login for the Site analytics dashboard, a member of analytics_reader (schemas/migrations/0006: SELECT on the per-site aggregates only). An operator creates it once, with the password of the db_dashboard secret (README.md, \"Site analytics dashboard\")."
  type        = string
  default     = "grafana_reader"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.rds_dashboard_username)) && !contains([var.rds_master_username, var.rds_app_username], var.rds_dashboard_username)
    error_message = "rds_dashboard_username must be a lower-case PostgreSQL identifier, different from rds_master_username and rds_app_username."
  }
}

variable "rds_multi_az" {
  description = "Synchronous standby in the second AZ, with automatic failover (1-2 minutes) when the primary or its AZ fails; doubles the instance and storage cost. false only for throwaway stacks."
  type        = bool
  default     = true
}

variable "rds_backup_retention_days" {
  description = "Automated backup retention (1-35 days)."
  type        = number
  default     = 7

  validation {
    condition     = var.rds_backup_retention_days >= 1 && var.rds_backup_retention_days <= 35
    error_message = "rds_backup_retention_days must be between 1 and 35."
  }
}

variable "rds_skip_final_snapshot" {
  description = "Skip the final snapshot on destroy."
  type        = bool
  default     = false
}

variable "rds_monitoring_interval" {
  description = "Enhanced monitoring interval in seconds (0 disables; 1, 5, 10, 15, 30, 60)."
  type        = number
  default     = 60

  validation {
    condition     = contains([0, 1, 5, 10, 15, 30, 60], var.rds_monitoring_interval)
    error_message = "rds_monitoring_interval must be one of 0, 1, 5, 10, 15, 30, 60."
  }
}

variable "rds_performance_insights" {
  description = "Performance Insights (7-day retention, free tier), encrypted with the stack's key: which statements and waits load the database. Keep it on outside throwaway stacks."
  type        = bool
  default     = true
}

variable "rds_slow_query_ms" {
  description = "log_min_duration_statement: statements slower than this are logged (ms)."
  type        = number
  default     = 1000
}

variable "enable_rds_proxy" {
  description = "Put an RDS Proxy between the consumer and PostgreSQL (connection pooling; ~$22/month on a 2-vCPU instance)."
  type        = bool
  default     = false
}

# --- Observability host (Grafana) ---------------------------------------------

variable "enable_grafana" {
  description = "Create the EC2 host that runs Grafana (the aws profile of grafana/docker-compose.yml)."
  type        = bool
  default     = true
}

variable "grafana_instance_type" {
  description = "Instance type of the Grafana host (Graviton t4g by default)."
  type        = string
  default     = "t4g.small"
}

variable "grafana_volume_size_gb" {
  description = "Root volume size of the Grafana host (GB)."
  type        = number
  default     = 20
}

variable "grafana_source_dir" {
  description = "Folder whose files (docker-compose.yml and provisioning) are uploaded to S3 and run on the host, relative to this directory."
  type        = string
  default     = "../grafana"
}

variable "docker_compose_version" {
  description = "Docker Compose v2 release installed on the Grafana host (Amazon Linux 2023 does not package it)."
  type        = string
  default     = "v2.29.7"
}

variable "docker_compose_sha256" {
  description = "Expected sha256 of the docker-compose-linux-<arch> binary. Empty = check against the release's own .sha256 file only (integrity, not provenance)."
  type        = string
  default     = ""
}

# --- Alarms -------------------------------------------------------------------

variable "alarm_email" {
  description = "Email subscribed to the alarm topic (confirm the subscription mail); null = no subscription."
  type        = string
  default     = null
}

variable "iterator_age_threshold_ms" {
  description = "Alarm when the consumer's IteratorAge (Maximum) stays above this many milliseconds..."
  type        = number
  default     = 60000
}

variable "iterator_age_evaluation_minutes" {
  description = "...for this many consecutive minutes."
  type        = number
  default     = 5
}

variable "lambda_errors_threshold" {
  description = "Alarm when a function reports at least this many Errors in 5 minutes."
  type        = number
  default     = 1
}

# --- Alarms: ratios, PostgreSQL, budget (issue #22) ----------------------------

variable "alarm_on_missing_traffic" {
  description = "Treat missing consumer IteratorAge (no batch reached the consumer) as breaching: right for a pipeline that always has traffic, where silence means the producer, stream or mapping stopped. Set false for stacks without steady traffic (dev, staging), where the alarm would otherwise sit in ALARM while idle."
  type        = bool
  default     = true
}

variable "api_5xx_ratio_threshold_percent" {
  description = "Alarm when more than this percentage of API requests is answered 5xx in each of two 5-minute periods."
  type        = number
  default     = 1

  validation {
    condition     = var.api_5xx_ratio_threshold_percent > 0 && var.api_5xx_ratio_threshold_percent < 100
    error_message = "api_5xx_ratio_threshold_percent must be above 0 and below 100."
  }
}

variable "producer_unaccepted_ratio_threshold_percent" {
  description = "Alarm when the producer cannot put more than this percentage of valid events on the stream (throttled or unavailable) in each of two 5-minute periods."
  type        = number
  default     = 1

  validation {
    condition     = var.producer_unaccepted_ratio_threshold_percent > 0 && var.producer_unaccepted_ratio_threshold_percent < 100
    error_message = "producer_unaccepted_ratio_threshold_percent must be above 0 and below 100."
  }
}

variable "quarantine_ratio_threshold_percent" {
  description = "Alarm when the consumer quarantines more than this percentage of the events it decodes in 5 minutes."
  type        = number
  default     = 1

  validation {
    condition     = var.quarantine_ratio_threshold_percent > 0 && var.quarantine_ratio_threshold_percent < 100
    error_message = "quarantine_ratio_threshold_percent must be above 0 and below 100."
  }
}

variable "rds_cpu_alarm_percent" {
  description = "Alarm when PostgreSQL's average CPU stays above this percentage for 15 minutes."
  type        = number
  default     = 80

  validation {
    condition     = var.rds_cpu_alarm_percent > 0 && var.rds_cpu_alarm_percent < 100
    error_message = "rds_cpu_alarm_percent must be above 0 and below 100."
  }
}

variable "rds_connections_alarm_threshold" {
  description = "Alarm when PostgreSQL holds more connections than this for 10 minutes. Set it to about 80% of the instance's max_connections (`SHOW max_connections`; RDS's default is DBInstanceClassMemory / 9531392, under 112 on the 1 GiB db.t4g.micro). The consumer opens up to 2 per concurrent instance (40 at consumer_reserved_concurrency = 20), the compactor 2."
  type        = number
  default     = 60

  validation {
    condition     = var.rds_connections_alarm_threshold >= 1
    error_message = "rds_connections_alarm_threshold must be at least 1."
  }
}

variable "monthly_budget_usd" {
  description = "AWS Budgets monthly cost limit for the account, in USD: the alarm topic is notified at 80% and 100% of actual spend and when the month's forecast exceeds it. The default leaves room above the stack's idle cost (README, \"Cost\")."
  type        = number
  default     = 200

  validation {
    condition     = var.monthly_budget_usd > 0
    error_message = "monthly_budget_usd must be above 0."
  }
}

# --- Protection (issue #22) -----------------------------------------------------

variable "api_route_throttling" {
  description = "Per-route throttles, \"METHOD /path\" => { rate_limit (requests/s), burst_limit (requests) }, each replacing the stage-wide api_throttling_* limits for that route (REST and HTTP API alike); routes left out (POST /events by default) keep the stage's. The defaults keep floods of health checks and CORS preflights (each a Lambda invocation; browsers cache preflights for up to a day) from spending the producer's reserved concurrency that POST /events needs."
  type = map(object({
    rate_limit  = number
    burst_limit = number
  }))
  default = {
    "OPTIONS /events" = { rate_limit = 100, burst_limit = 200 }
    "GET /health"     = { rate_limit = 10, burst_limit = 20 }
  }

  validation {
    condition     = alltrue([for route in keys(var.api_route_throttling) : can(regex("^[A-Z]+ /[a-z]+$", route))])
    error_message = "api_route_throttling keys are routes as \"METHOD /path\": \"POST /events\", \"OPTIONS /events\" or \"GET /health\"."
  }
  validation {
    condition     = alltrue([for t in values(var.api_route_throttling) : t.rate_limit >= 0 && t.burst_limit >= 0 && floor(t.burst_limit) == t.burst_limit])
    error_message = "api_route_throttling: rate_limit must be >= 0 and burst_limit a whole number >= 0."
  }
}
