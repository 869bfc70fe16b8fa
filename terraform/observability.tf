# Grafana host: one EC2 instance (Graviton by default) in a public subnet that runs Grafana alone
# from the repository's grafana/docker-compose.yml (its `aws` profile) with an EC2 role that can
# read CloudWatch metrics (the Lambdas' EMF metrics, AWS/Kinesis, AWS/Lambda, ...) and Logs
# Insights.
#
# The files under var.grafana_source_dir are uploaded to the lake bucket under ops/grafana/
# and fetched at boot. Changing any of them changes user_data, which replaces the instance
# (user_data_replace_on_change): the host is disposable; dashboards and datasources come from
# provisioning files, the admin password from Secrets Manager.
#
# Access: only through an SSM port-forwarding session (README "Reaching Grafana"); no SSH and no
# inbound rule at all. Grafana itself speaks plain HTTP, so nothing may reach port 3000 from a
# network: the session carries it inside SSM's TLS connections (operator -> SSM -> the host's
# agent, which dials localhost:3000), authenticated and authorised by IAM (ssm:StartSession, a
# CloudTrail-logged call), with no certificate, domain or load balancer to pay for or renew.
#   aws ssm start-session --target <instance-id> \
#     --document-name AWS-StartPortForwardingSession --parameters portNumber=3000,localPortNumber=3000

locals {
  grafana_dir = startswith(var.grafana_source_dir, "/") ? var.grafana_source_dir : "${path.module}/${var.grafana_source_dir}"
  # The host runs the compose file's `aws` profile, Grafana alone: on AWS the binaries are Lambdas
  # that publish CloudWatch EMF metrics and write CloudWatch Logs, so the `local` profile's
  # Prometheus, Loki and Promtail would have nothing to read. What only they use is not uploaded:
  # their configs, their datasources and the dashboards that query them. Left on the host, those
  # would be provisioned into Grafana and show errors that look like an outage; and editing a
  # Prometheus rule would replace the host for nothing. terraform/tests/test_structure.py checks
  # that what remains uses only datasources the remaining files provision.
  grafana_local_only = "^(prometheus|loki|promtail)/|^provisioning/datasources/prometheus-loki\\.yml$|^dashboards/.*-(prometheus|loki)\\.json$"
  # docker-compose.yml and the configs its services mount (not tests/, tools/, docs).
  grafana_compose_files = var.enable_grafana ? [
    for f in fileset(local.grafana_dir, "**") : f
    if !startswith(f, "tests/") && !startswith(f, "tools/") && !endswith(f, ".md") && !strcontains(f, "__pycache__")
  ] : []
  # What the host runs.
  grafana_files = toset([for f in local.grafana_compose_files : f if !can(regex(local.grafana_local_only, f))])
  grafana_config_hash = sha256(join(",", [
    for f in sort(tolist(local.grafana_files)) : "${f}=${filesha256("${local.grafana_dir}/${f}")}"
  ]))

  grafana_arch = var.enable_grafana ? (
    contains(data.aws_ec2_instance_type.grafana[0].supported_architectures, "arm64") ? "arm64" : "x86_64"
  ) : "arm64"
}

resource "aws_s3_object" "grafana" {
  for_each = local.grafana_files

  bucket      = aws_s3_bucket.lake.id
  key         = "${local.lake_ops_prefix}${each.value}"
  source      = "${local.grafana_dir}/${each.value}"
  source_hash = filemd5("${local.grafana_dir}/${each.value}")
  kms_key_id  = aws_kms_key.main.arn
}

# --- The Site analytics dashboard's database login --------------------------------------------
# Grafana reads the per-site aggregates as var.rds_dashboard_username, a member of
# `analytics_reader` (schemas/migrations/0006_dashboard_reader.sql: SELECT on site_hourly,
# site_daily_pages and their views; no ledger, no writes). Terraform cannot reach the private
# database and the consumer provisions only its own login, so an operator creates this one once
# with the password this secret holds (README.md, "Site analytics dashboard"); until then the
# dashboard's panels show the login error and the rest of Grafana works. The host reads the
# secret at boot into the compose .env (templates/grafana-user-data.sh.tftpl).
data "aws_secretsmanager_random_password" "db_dashboard" {
  count = var.enable_grafana ? 1 : 0

  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "db_dashboard" {
  #checkov:skip=CKV2_AWS_57:The login is created by hand with this password (README "Site analytics dashboard") and Grafana reads it only at boot; rotating the secret alone would lock the dashboard out. Rotate by changing the password in PostgreSQL and the secret together, then replacing the host.
  count = var.enable_grafana ? 1 : 0

  name_prefix             = "${var.name}-db-dashboard-"
  description             = "${var.name}: PostgreSQL login of Grafana's Site analytics dashboard (SELECT on the per-site aggregates)"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "db_dashboard" {
  count = var.enable_grafana ? 1 : 0

  secret_id = aws_secretsmanager_secret.db_dashboard[0].id
  # The shape of the other database secrets (and of AWS's RDS rotation functions).
  secret_string = jsonencode({
    engine    = "postgres"
    host      = aws_db_instance.postgres.address
    port      = aws_db_instance.postgres.port
    dbname    = var.rds_database_name
    username  = var.rds_dashboard_username
    password  = data.aws_secretsmanager_random_password.db_dashboard[0].random_password
    masterarn = local.db_secret_arn
  })

  lifecycle {
    # The data source draws a new password on every plan; the first one is the login's.
    ignore_changes = [secret_string]
  }
}

# Grafana's admin password. The host generates it on first boot and stores it here; read it
#   aws secretsmanager get-secret-value --secret-id <grafana_admin_secret_arn> --query SecretString --output text
resource "aws_secretsmanager_secret" "grafana_admin" {
  #checkov:skip=CKV2_AWS_57:The value is generated on the host at first boot and Grafana keeps its own copy in its database; rotating the secret alone would desynchronise them. Replace the instance to rotate.
  count = var.enable_grafana ? 1 : 0

  name_prefix             = "${var.name}/grafana-admin-"
  description             = "Grafana admin password for the ${var.name} observability host"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}

data "aws_ec2_instance_type" "grafana" {
  count = var.enable_grafana ? 1 : 0

  instance_type = var.grafana_instance_type
}

data "aws_ssm_parameter" "al2023_ami" {
  count = var.enable_grafana ? 1 : 0

  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${local.grafana_arch}"
}

# --- IAM ----------------------------------------------------------------------

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "grafana" {
  count = var.enable_grafana ? 1 : 0

  name               = "${var.name}-grafana-host"
  description        = "Grafana host: read CloudWatch metrics and logs, its config and admin secret; SSM"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

data "aws_iam_policy_document" "grafana" {
  count = var.enable_grafana ? 1 : 0

  # What Grafana's CloudWatch data source calls (its documented policy; Grafana is the only
  # datasource on this host that reads AWS). These actions have no resource-level scoping.
  # terraform/tests/test_structure.py holds this policy to that list.
  statement {
    sid = "ReadMetrics"
    actions = [
      "cloudwatch:GetMetricData",
      "cloudwatch:GetMetricStatistics",
      "cloudwatch:ListMetrics",
      "cloudwatch:DescribeAlarmsForMetric",
      "logs:DescribeLogGroups",
      "logs:StopQuery",
      "ec2:DescribeRegions",
      "ec2:DescribeInstances",
      "ec2:DescribeTags",
      "tag:GetResources",
      # Whether this account is a cross-account observability monitoring account (one with a
      # sink), which decides if the query editor offers other accounts' metrics and log groups.
      # oam:ListAttachedLinks, which Grafana calls only for a sink it found, is left out: none
      # exists here, and it is a sink-scoped action this wildcard statement should not grant.
      "oam:ListSinks",
    ]
    resources = ["*"]
  }

  statement {
    sid = "ReadAlarmsAndInsights"
    actions = [
      "cloudwatch:DescribeAlarms",
      "cloudwatch:DescribeAlarmHistory",
      "cloudwatch:GetInsightRuleReport",
    ]
    resources = [
      "arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:*",
      "arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:insight-rule/*",
    ]
  }

  # Logs Insights and log browsing, in this account and region only.
  statement {
    sid = "QueryLogs"
    actions = [
      "logs:GetLogGroupFields",
      "logs:StartQuery",
      "logs:GetQueryResults",
      "logs:GetLogEvents",
      "logs:FilterLogEvents",
    ]
    resources = [
      "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*",
    ]
  }

  statement {
    sid       = "FetchGrafanaConfig"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.lake.arn}/${local.lake_ops_prefix}*"]
  }

  statement {
    sid       = "ListGrafanaConfig"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.lake_ops_prefix}*"]
    }
  }

  statement {
    sid       = "GrafanaAdminSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
    resources = [aws_secretsmanager_secret.grafana_admin[0].arn]
  }

  statement {
    sid       = "DashboardDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.db_dashboard[0].arn]
  }

  statement {
    sid       = "UseKeyForConfigAndSecret"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "grafana" {
  count = var.enable_grafana ? 1 : 0

  name   = "grafana-host"
  role   = aws_iam_role.grafana[0].id
  policy = data.aws_iam_policy_document.grafana[0].json
}

resource "aws_iam_role_policy_attachment" "grafana_ssm" {
  count = var.enable_grafana ? 1 : 0

  role       = aws_iam_role.grafana[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "grafana" {
  count = var.enable_grafana ? 1 : 0

  name = "${var.name}-grafana-host"
  role = aws_iam_role.grafana[0].name
}

# --- Network ------------------------------------------------------------------

# No ingress rule: the UI is reached through SSM, whose agent connects out (egress below). The
# description still says "3000 from allowed_cidr only" from before; changing a security group's
# description replaces the group, so it stays.
resource "aws_security_group" "grafana" {
  count = var.enable_grafana ? 1 : 0

  name        = "${var.name}-grafana"
  description = "Grafana host: 3000 from allowed_cidr only; HTTPS out"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-grafana" }
}

resource "aws_vpc_security_group_egress_rule" "grafana_https" {
  count = var.enable_grafana ? 1 : 0

  security_group_id = aws_security_group.grafana[0].id
  description       = "HTTPS out: AWS APIs, SSM, dnf repositories, container registry, Compose release"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# The Site analytics dashboard connects to the RDS instance itself, not to the optional RDS Proxy
# (the proxy knows only the consumer's and the master's secrets). The two groups' descriptions
# predate this and are left as they are: changing a security group's description replaces it.
resource "aws_vpc_security_group_egress_rule" "grafana_to_postgres" {
  count = var.enable_grafana ? 1 : 0

  security_group_id            = aws_security_group.grafana[0].id
  description                  = "PostgreSQL: the Site analytics dashboard's read-only login"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.rds.id
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_grafana" {
  count = var.enable_grafana ? 1 : 0

  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from the Grafana host (Site analytics dashboard, read-only login)"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.grafana[0].id
}

# --- Instance -----------------------------------------------------------------

resource "aws_instance" "grafana" {
  #checkov:skip=CKV_AWS_88:The public IP is for outbound only: the host pulls container images from the internet (no NAT in this VPC). Its security group has no inbound rule; the UI is reached through SSM port forwarding.
  #checkov:skip=CKV_AWS_126:Basic 5-minute EC2 metrics are enough for a single dashboard host; detailed monitoring adds ~$2/month.
  count = var.enable_grafana ? 1 : 0

  ami                         = data.aws_ssm_parameter.al2023_ami[0].insecure_value
  instance_type               = var.grafana_instance_type
  subnet_id                   = aws_subnet.public[0].id
  vpc_security_group_ids      = [aws_security_group.grafana[0].id]
  iam_instance_profile        = aws_iam_instance_profile.grafana[0].name
  associate_public_ip_address = true
  ebs_optimized               = true
  monitoring                  = false

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 2          # containers (one extra hop) reach IMDS for role credentials
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.grafana_volume_size_gb
    encrypted             = true
    kms_key_id            = aws_kms_key.main.arn
    delete_on_termination = true
  }

  user_data = templatefile("${path.module}/templates/grafana-user-data.sh.tftpl", {
    region          = local.region
    bucket          = aws_s3_bucket.lake.id
    prefix          = local.lake_ops_prefix
    secret_arn      = aws_secretsmanager_secret.grafana_admin[0].arn
    db_secret_arn   = aws_secretsmanager_secret.db_dashboard[0].arn
    compose_version = var.docker_compose_version
    compose_sha256  = var.docker_compose_sha256
    config_hash     = local.grafana_config_hash
  })
  user_data_replace_on_change = true

  tags = { Name = "${var.name}-grafana" }

  lifecycle {
    # A newer AL2023 AMI should not replace the host on every plan; replace it deliberately
    # (terraform apply -replace=aws_instance.grafana[0]).
    ignore_changes = [ami]
  }

  depends_on = [
    aws_s3_object.grafana,
    aws_iam_role_policy.grafana,
    aws_secretsmanager_secret_version.db_dashboard,
  ]
}
