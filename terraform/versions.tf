# Terraform and provider requirements, and the one AWS provider configuration.

terraform {
  # 1.6+: `terraform test`, optional object attributes and the validation rules used here.
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Written against the 5.x schema; every argument used here also exists in 6.x.
      version = ">= 5.70.0, < 7.0.0"
    }
  }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(
      {
        Project   = var.name
        ManagedBy = "terraform"
      },
      var.tags,
    )
  }
}
