from eventpipe.tlsendpoint import MutualTLSServerParser

mtls = MutualTLSServerParser()
