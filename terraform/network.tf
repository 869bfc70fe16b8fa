# VPC for the consumer Lambda, RDS (and RDS Proxy) and the Grafana host.
#
# No NAT gateway: the private subnets reach AWS only through VPC endpoints -- gateway
# endpoints (free) for S3 and DynamoDB, and one interface endpoint, Secrets Manager. The two
# public subnets exist for the Grafana host, which pulls container images from the internet.

locals {
  # Interface endpoints (private DNS on), one ENI per private subnet each, each billed per AZ-hour
  # whether used or not ($14.60/month for the two AZs in us-east-1), so only what code in a private
  # subnet calls. The consumer and the compactor read their database secrets; RDS Proxy reads the
  # same secrets from its subnets. Nothing else there calls an AWS API outside S3 and DynamoDB:
  # the event source mapping reads Kinesis and writes the on-failure queue, Lambda ships the
  # functions' logs (and the EMF metrics inside them) and their X-Ray segments (the binaries carry
  # no X-Ray SDK), and RDS sends enhanced monitoring and Performance Insights -- all from the
  # services' own networks. (The local runner's Kinesis client never runs on AWS.)
  interface_endpoint_services = ["secretsmanager"]
}

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # required for interface endpoints' private DNS

  tags = { Name = var.name }
}

# Lock down the VPC's default security group: nothing uses it, so it allows nothing.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.main.id

  tags = { Name = "${var.name}-default-deny-all" }
}

resource "aws_subnet" "private" {
  count = 2

  vpc_id                  = aws_vpc.main.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = false

  tags = { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" }
}

resource "aws_subnet" "public" {
  count = 2

  vpc_id                  = aws_vpc.main.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, 8 + count.index)
  map_public_ip_on_launch = false # the Grafana instance asks for its own public IP

  tags = { Name = "${var.name}-public-${local.azs[count.index]}", Tier = "public" }
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id

  tags = { Name = var.name }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }

  tags = { Name = "${var.name}-public" }
}

resource "aws_route_table_association" "public" {
  count = 2

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# Private route table: only the local route and the gateway endpoints' prefix-list routes.
resource "aws_route_table" "private" {
  vpc_id = aws_vpc.main.id

  tags = { Name = "${var.name}-private" }
}

resource "aws_route_table_association" "private" {
  count = 2

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# --- VPC endpoints ------------------------------------------------------------

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.main.id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id, aws_route_table.public.id]

  tags = { Name = "${var.name}-s3" }
}

resource "aws_vpc_endpoint" "dynamodb" {
  vpc_id            = aws_vpc.main.id
  service_name      = "com.amazonaws.${local.region}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]

  tags = { Name = "${var.name}-dynamodb" }
}

resource "aws_vpc_endpoint" "interface" {
  for_each = toset(local.interface_endpoint_services)

  vpc_id              = aws_vpc.main.id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true

  tags = { Name = "${var.name}-${each.key}" }
}

# --- Security groups ----------------------------------------------------------
# Rules are separate resources (aws_vpc_security_group_*_rule), never inline blocks, so each
# has its own description and no group gets AWS's default allow-all egress.

resource "aws_security_group" "endpoints" {
  name        = "${var.name}-vpc-endpoints"
  description = "Interface VPC endpoints: HTTPS from inside the VPC"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-vpc-endpoints" }
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https_from_vpc" {
  security_group_id = aws_security_group.endpoints.id
  description       = "HTTPS to AWS APIs from anything in the VPC (consumer, compactor, RDS Proxy)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = aws_vpc.main.cidr_block
}

resource "aws_security_group" "consumer" {
  name        = "${var.name}-stream-consumer"
  description = "stream-consumer Lambda: egress to VPC endpoints and PostgreSQL only"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-stream-consumer" }
}

resource "aws_vpc_security_group_egress_rule" "consumer_to_endpoints" {
  security_group_id            = aws_security_group.consumer.id
  description                  = "HTTPS to the interface endpoint (Secrets Manager)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id
}

resource "aws_vpc_security_group_egress_rule" "consumer_to_s3" {
  security_group_id = aws_security_group.consumer.id
  description       = "HTTPS to S3 through the gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
}

resource "aws_vpc_security_group_egress_rule" "consumer_to_dynamodb" {
  security_group_id = aws_security_group.consumer.id
  description       = "HTTPS to DynamoDB through the gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.dynamodb.prefix_list_id
}

resource "aws_vpc_security_group_egress_rule" "consumer_to_postgres" {
  security_group_id            = aws_security_group.consumer.id
  description                  = "PostgreSQL (the RDS instance, or RDS Proxy when enabled)"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = var.enable_rds_proxy ? aws_security_group.rds_proxy[0].id : aws_security_group.rds.id
}

resource "aws_security_group" "rds" {
  name        = "${var.name}-postgres"
  description = "RDS PostgreSQL: 5432 from the consumer (or its RDS Proxy) only"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-postgres" }
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_consumer" {
  count = var.enable_rds_proxy ? 0 : 1

  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from the stream-consumer Lambda"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.consumer.id
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_proxy" {
  count = var.enable_rds_proxy ? 1 : 0

  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from RDS Proxy"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.rds_proxy[0].id
}

resource "aws_security_group" "rds_proxy" {
  #checkov:skip=CKV2_AWS_5:Attached to aws_db_proxy.postgres (rds.tf), a resource type this check's connection list does not include.
  count = var.enable_rds_proxy ? 1 : 0

  name        = "${var.name}-postgres-proxy"
  description = "RDS Proxy: 5432 from the consumer, to the RDS instance and Secrets Manager"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-postgres-proxy" }
}

resource "aws_vpc_security_group_ingress_rule" "proxy_from_consumer" {
  count = var.enable_rds_proxy ? 1 : 0

  security_group_id            = aws_security_group.rds_proxy[0].id
  description                  = "PostgreSQL from the stream-consumer Lambda"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.consumer.id
}

resource "aws_vpc_security_group_egress_rule" "proxy_to_rds" {
  count = var.enable_rds_proxy ? 1 : 0

  security_group_id            = aws_security_group.rds_proxy[0].id
  description                  = "PostgreSQL to the RDS instance"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.rds.id
}

resource "aws_vpc_security_group_egress_rule" "proxy_to_endpoints" {
  count = var.enable_rds_proxy ? 1 : 0

  security_group_id            = aws_security_group.rds_proxy[0].id
  description                  = "HTTPS to the Secrets Manager endpoint (proxy reads the DB secret)"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id
}

# --- Flow logs ----------------------------------------------------------------

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/aws/vpc/${var.name}/flow-logs"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_flow_log" "main" {
  vpc_id               = aws_vpc.main.id
  traffic_type         = var.flow_log_traffic_type
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn         = aws_iam_role.flow_logs.arn

  tags = { Name = "${var.name}-flow-logs" }
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name}-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    sid = "WriteFlowLogs"
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = [
      aws_cloudwatch_log_group.flow_logs.arn,
      "${aws_cloudwatch_log_group.flow_logs.arn}:*",
    ]
  }

  statement {
    sid       = "FindLogGroup"
    actions   = ["logs:DescribeLogGroups"] # not resource-scopable
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}
