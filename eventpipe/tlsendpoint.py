"""
A server endpoint string for TLS that requires client certificates:

    mtls:8443:privateKey=key.pem:certKey=cert.pem:caCerts=clients-ca.pem

Like Twisted's C{ssl:} endpoint (C{interface=}, C{backlog=} work the same),
but a client must present a certificate signed by one of the certificates
in C{caCerts} (a PEM file, one or more certificates), or the handshake
fails and nothing it sent is read.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class MutualTLSServerParser:
    prefix = "mtls"

    def parseStreamServer(  # type: ignore[override]
        self, reactor: Any, *args: str, **kwargs: str
    ) -> SSL4ServerEndpoint:
        from twisted.internet import ssl

        if len(args) != 1 or not args[0].isdigit():
            raise ValueError("mtls: needs a port: mtls:PORT:privateKey=...:caCerts=...")
        if "privateKey" not in kwargs or "caCerts" not in kwargs:
            raise ValueError("mtls: needs privateKey= and caCerts= (and certKey= if separate)")
        with open(kwargs["privateKey"], "rb") as stream:
            key = stream.read()
        with open(kwargs.get("certKey", kwargs["privateKey"]), "rb") as stream:
            certificate = stream.read()
        with open(kwargs["caCerts"], "rb") as stream:
            authorities = [
                ssl.Certificate.loadPEM(block) for block in _PEM_CERTIFICATE.findall(stream.read())
            ]
        if not authorities:
            raise ValueError(f"mtls: no certificate in {kwargs['caCerts']}")
        server = ssl.PrivateCertificate.loadPEM(certificate + b"\n" + key)
        # options(*authorities): verify the peer, require its certificate.
        return SSL4ServerEndpoint(
            reactor,
            int(args[0]),
            server.options(*authorities),
            backlog=int(kwargs.get("backlog", 50)),
            interface=kwargs.get("interface", ""),
        )
