#!/bin/sh
# Init of the enclave image (Dockerfile.enclave). A Nitro Enclave has no network and its
# loopback interface starts down: bring it up, point the regional KMS host name at the
# in-enclave TCP->vsock forwarder (which pipes TLS bytes to vsock-proxy on the parent,
# CID 3 port 8000), and serve the parent on vsock port 5000.
set -eu
: "${KMS_KEY_ARN:?the image must be built with --build-arg KMS_KEY_ARN=arn:aws:kms:...}"
# The enclave takes its KMS region from the ARN; the host name below must be that region's.
arn_region=$(echo "${KMS_KEY_ARN}" | cut -d: -f4)
if [ "${arn_region}" != "${KMS_REGION}" ]; then
  echo "enclave-init: KMS_REGION=${KMS_REGION} is not the region of KMS_KEY_ARN (${arn_region})" >&2
  exit 1
fi
ip link set dev lo up
echo "127.0.0.1 kms.${KMS_REGION}.amazonaws.com" >> /etc/hosts
exec /usr/local/bin/ekms-enclave \
  --nsm nitro \
  --listen vsock://4294967295:5000 \
  --kms-forward 127.0.0.1:443 \
  --kms-key-arn "${KMS_KEY_ARN}"
