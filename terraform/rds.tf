# PostgreSQL for the aggregate tables and the dedup ledger (schemas/migrations), in the private
# subnets, TLS-only, master password generated and rotated by RDS in Secrets Manager.
# Optional RDS Proxy (enable_rds_proxy) pools the consumer's connections.

locals {
  rds_major_version = split(".", var.rds_engine_version)[0]
  # The RDS-managed Secrets Manager secret (username/password, rotated by RDS): the master user,
  # which owns the schema and is used only to apply migrations (DATABASE_MIGRATOR_SECRET_ARN).
  db_secret_arn = aws_db_instance.postgres.master_user_secret[0].secret_arn
  # The application's login (DATABASE_SECRET_ARN): DML on the pipeline's tables only.
  db_app_secret_arn = aws_secretsmanager_secret.db_app.arn
}

# --- The application's database login ------------------------------------------------------
# The consumer and the compactor log in as var.rds_app_username, a member of the
# `analytics_writer` group role (schemas/migrations/0003_roles.sql: SELECT/INSERT/UPDATE/DELETE
# on the pipeline's tables, no DDL). Terraform cannot reach the private database, so the
# consumer creates the role at its first init, as the master user, with the password this
# secret holds (service_kit::postgres::grant_application_role). Secrets Manager generates the
# password once: the first value is kept (ignore_changes), later ones belong to rotation. It is
# in the Terraform state (marked sensitive) until the first rotation makes that copy stale; an
# ephemeral resource with a write-only argument would keep it out, but `terraform test`'s
# mocked provider cannot open ephemeral resources (SECURITY.md, known gaps).
data "aws_secretsmanager_random_password" "db_app" {
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "db_app" {
  #checkov:skip=CKV2_AWS_57:No rotation function is deployed with the stack; README ("Database roles") gives the one command that attaches AWS's multi-user PostgreSQL rotation function, whose `masterarn` field this secret already carries. The binaries re-read the secret on a refused password.
  name_prefix             = "${var.name}-db-app-"
  description             = "${var.name}: PostgreSQL login of the consumer and compactor (DML only)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "db_app" {
  secret_id = aws_secretsmanager_secret.db_app.id
  # The shape AWS's RDS rotation functions read and write.
  secret_string = jsonencode({
    engine    = "postgres"
    host      = aws_db_instance.postgres.address
    port      = aws_db_instance.postgres.port
    dbname    = var.rds_database_name
    username  = var.rds_app_username
    password  = data.aws_secretsmanager_random_password.db_app.random_password
    masterarn = local.db_secret_arn
  })

  lifecycle {
    # The data source draws a new password on every plan; the first one stays, rotation owns the rest.
    ignore_changes = [secret_string]
  }
}

resource "aws_db_subnet_group" "postgres" {
  name        = local.rds_identifier
  description = "${var.name} PostgreSQL: private subnets"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "postgres" {
  name_prefix = "${local.rds_identifier}-pg${local.rds_major_version}-"
  family      = "postgres${local.rds_major_version}"
  description = "${var.name}: TLS only, DDL and slow-query logging"

  # Reject every non-TLS connection.
  parameter {
    name         = "rds.force_ssl"
    value        = "1"
    apply_method = "pending-reboot"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = tostring(var.rds_slow_query_ms)
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# Log groups RDS would otherwise create unencrypted and with no expiry.
resource "aws_cloudwatch_log_group" "postgres" {
  for_each = toset(["postgresql", "upgrade"])

  name              = "/aws/rds/instance/${local.rds_identifier}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  count = var.rds_monitoring_interval > 0 ? 1 : 0

  name               = "${local.rds_identifier}-monitoring"
  description        = "RDS enhanced monitoring for ${local.rds_identifier}"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  count = var.rds_monitoring_interval > 0 ? 1 : 0

  role       = aws_iam_role.rds_monitoring[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "postgres" {
  identifier     = local.rds_identifier
  engine         = "postgres"
  engine_version = var.rds_engine_version
  instance_class = var.rds_instance_class

  db_name  = var.rds_database_name
  username = var.rds_master_username
  port     = 5432

  # RDS generates the password and keeps it in a Secrets Manager secret encrypted with our key.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.main.arn

  allocated_storage = var.rds_allocated_storage_gb
  # Storage autoscaling: a full volume stops every write (the ledger and the aggregates), while
  # growing it is online; the ceiling caps what a runaway table can cost.
  max_allocated_storage = var.rds_max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.main.arn

  db_subnet_group_name   = aws_db_subnet_group.postgres.name
  vpc_security_group_ids = [aws_security_group.rds.id]
  publicly_accessible    = false
  # A standby in the other AZ: the consumer's batches fail over in 1-2 minutes instead of waiting
  # for the instance to be rebuilt, which with single-AZ can take long enough to exhaust the
  # mapping's retries.
  multi_az             = var.rds_multi_az
  parameter_group_name = aws_db_parameter_group.postgres.name
  ca_cert_identifier   = "rds-ca-rsa2048-g1"

  iam_database_authentication_enabled = true
  auto_minor_version_upgrade          = true
  allow_major_version_upgrade         = false

  backup_retention_period   = var.rds_backup_retention_days
  backup_window             = "03:00-03:30"
  maintenance_window        = "sun:04:00-sun:05:00"
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = var.rds_skip_final_snapshot
  final_snapshot_identifier = "${local.rds_identifier}-final"

  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  monitoring_interval                   = var.rds_monitoring_interval
  monitoring_role_arn                   = var.rds_monitoring_interval > 0 ? aws_iam_role.rds_monitoring[0].arn : null
  performance_insights_enabled          = var.rds_performance_insights
  performance_insights_kms_key_id       = var.rds_performance_insights ? aws_kms_key.main.arn : null
  performance_insights_retention_period = var.rds_performance_insights ? 7 : null # 7 days: the free tier

  lifecycle {
    precondition {
      condition     = var.rds_max_allocated_storage_gb == 0 || var.rds_max_allocated_storage_gb >= var.rds_allocated_storage_gb
      error_message = "rds_max_allocated_storage_gb must be 0 (no autoscaling) or at least rds_allocated_storage_gb."
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.postgres,
    aws_iam_role_policy_attachment.rds_monitoring,
  ]
}

# --- RDS Proxy (optional) -----------------------------------------------------

data "aws_iam_policy_document" "rds_proxy_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["rds.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "rds_proxy" {
  count = var.enable_rds_proxy ? 1 : 0

  name               = "${local.rds_identifier}-proxy"
  description        = "RDS Proxy reads the master and application secrets"
  assume_role_policy = data.aws_iam_policy_document.rds_proxy_assume.json
}

data "aws_iam_policy_document" "rds_proxy" {
  statement {
    sid       = "ReadDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [local.db_secret_arn, local.db_app_secret_arn]
  }

  statement {
    sid       = "DecryptDatabaseSecret"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "rds_proxy" {
  count = var.enable_rds_proxy ? 1 : 0

  name   = "read-db-secret"
  role   = aws_iam_role.rds_proxy[0].id
  policy = data.aws_iam_policy_document.rds_proxy.json
}

resource "aws_cloudwatch_log_group" "rds_proxy" {
  count = var.enable_rds_proxy ? 1 : 0

  name              = "/aws/rds/proxy/${local.rds_identifier}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_db_proxy" "postgres" {
  count = var.enable_rds_proxy ? 1 : 0

  name                   = local.rds_identifier
  engine_family          = "POSTGRESQL"
  role_arn               = aws_iam_role.rds_proxy[0].arn
  vpc_subnet_ids         = aws_subnet.private[*].id
  vpc_security_group_ids = [aws_security_group.rds_proxy[0].id]
  require_tls            = true
  idle_client_timeout    = 1800
  debug_logging          = false

  auth {
    auth_scheme = "SECRETS"
    #checkov:skip=CKV_SECRET_6:False positive: the next line names the SCRAM-SHA-256 auth method (an enum), not a secret.
    client_password_auth_type = "POSTGRES_SCRAM_SHA_256"
    iam_auth                  = "DISABLED"
    secret_arn                = local.db_secret_arn
  }

  # The application's login through the proxy (the master's above serves the migrations).
  auth {
    auth_scheme = "SECRETS"
    #checkov:skip=CKV_SECRET_6:False positive: the next line names the SCRAM-SHA-256 auth method (an enum), not a secret.
    client_password_auth_type = "POSTGRES_SCRAM_SHA_256"
    iam_auth                  = "DISABLED"
    secret_arn                = local.db_app_secret_arn
  }

  depends_on = [
    aws_cloudwatch_log_group.rds_proxy,
    aws_iam_role_policy.rds_proxy,
  ]
}

resource "aws_db_proxy_default_target_group" "postgres" {
  count = var.enable_rds_proxy ? 1 : 0

  db_proxy_name = aws_db_proxy.postgres[0].name

  connection_pool_config {
    max_connections_percent      = 90
    max_idle_connections_percent = 50
    connection_borrow_timeout    = 30
  }
}

resource "aws_db_proxy_target" "postgres" {
  count = var.enable_rds_proxy ? 1 : 0

  db_proxy_name          = aws_db_proxy.postgres[0].name
  target_group_name      = aws_db_proxy_default_target_group.postgres[0].name
  db_instance_identifier = aws_db_instance.postgres.identifier
}
