#!/bin/sh
# A private CA and one certificate for the NATS nodes of docker-compose.yml, for TLS
# between the services and NATS and between the nodes (docker-compose.tls.yml):
#
#   sh deploy/nats/make-certs.sh deploy/nats/certs
#
# Writes ca.crt, ca.key, server.crt and server.key into the directory given (created,
# mode 700). Keep ca.key somewhere safe, and the directory out of version control. The
# certificate names nats-1, nats-2 and nats-3 and serves both as a server and as a client
# (routes present it to each other). Valid for 825 days.
set -eu
dir=${1:?usage: make-certs.sh DIRECTORY}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=Confab NATS CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=nats" \
    -keyout server.key -out server.csr 2>/dev/null
printf '%s\n' "subjectAltName=DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost" \
    "extendedKeyUsage=serverAuth,clientAuth" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.crt server.crt
echo "wrote $(pwd)/ca.crt, ca.key, server.crt, server.key"
