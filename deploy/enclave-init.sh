#!/bin/sh
# Init of the enclave image (Dockerfile.enclave). A Nitro Enclave has no network and its
# loopback interface starts down: bring it up (busybox ip), point the KMS host name of
# the pinned key's region at the in-enclave TCP->vsock forwarder (which pipes TLS bytes
# to vsock-proxy on the parent, CID 3 port 8000), and serve the parent on vsock port
# 5000. The region comes from the key ARN only (one source; ekms-enclave checks the ARN
# again and refuses a Configure naming another region).
set -eu
: "${KMS_KEY_ARN:?the image must be built with --build-arg KMS_KEY_ARN=arn:aws:kms:...}"
region=$(echo "${KMS_KEY_ARN}" | cut -d: -f4)
if [ -z "${region}" ]; then
  echo "enclave-init: KMS_KEY_ARN has no region: ${KMS_KEY_ARN}" >&2
  exit 1
fi
/usr/local/bin/busybox ip link set dev lo up
echo "127.0.0.1 kms.${region}.amazonaws.com" >> /etc/hosts
exec /usr/local/bin/ekms-enclave \
  --nsm nitro \
  --listen vsock://4294967295:5000 \
  --log-listen vsock://4294967295:5001 \
  --kms-forward 127.0.0.1:443 \
  --kms-key-arn "${KMS_KEY_ARN}"
