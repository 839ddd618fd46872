-- A policy store as the control plane wrote it before audit signatures
-- (schema migration 1): seed, put, suspend, resume and rollback, audit seqs
-- 1 to 5, hash-chained only. Made by pg_dump --schema=tenantguard_cp
-- --no-owner --no-privileges --inserts of the store of TestAuditTamperDetected's
-- fiveChanges at commit f102a92 (psql's \restrict lines removed); load
-- it with one simple-protocol Exec. Do not regenerate: it stands for
-- history written by that code.
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: tenantguard_cp; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA tenantguard_cp;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: audit; Type: TABLE; Schema: tenantguard_cp; Owner: -
--

CREATE TABLE tenantguard_cp.audit (
    seq bigint NOT NULL,
    at timestamp with time zone NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    version bigint NOT NULL,
    detail jsonb NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    CONSTRAINT audit_action_check CHECK ((action = ANY (ARRAY['put'::text, 'rollback'::text, 'suspend'::text, 'resume'::text, 'seed'::text])))
);


--
-- Name: audit_seq_seq; Type: SEQUENCE; Schema: tenantguard_cp; Owner: -
--

CREATE SEQUENCE tenantguard_cp.audit_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: audit_seq_seq; Type: SEQUENCE OWNED BY; Schema: tenantguard_cp; Owner: -
--

ALTER SEQUENCE tenantguard_cp.audit_seq_seq OWNED BY tenantguard_cp.audit.seq;


--
-- Name: head; Type: TABLE; Schema: tenantguard_cp; Owner: -
--

CREATE TABLE tenantguard_cp.head (
    id smallint NOT NULL,
    version bigint NOT NULL,
    audit_seq bigint NOT NULL,
    audit_hash bytea NOT NULL,
    CONSTRAINT head_id_check CHECK ((id = 1))
);


--
-- Name: schema_migrations; Type: TABLE; Schema: tenantguard_cp; Owner: -
--

CREATE TABLE tenantguard_cp.schema_migrations (
    version integer NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: versions; Type: TABLE; Schema: tenantguard_cp; Owner: -
--

CREATE TABLE tenantguard_cp.versions (
    version bigint NOT NULL,
    policy jsonb NOT NULL,
    author text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    comment text NOT NULL,
    diff text NOT NULL,
    parent bigint,
    CONSTRAINT versions_version_check CHECK ((version > 0))
);


--
-- Name: audit seq; Type: DEFAULT; Schema: tenantguard_cp; Owner: -
--

ALTER TABLE ONLY tenantguard_cp.audit ALTER COLUMN seq SET DEFAULT nextval('tenantguard_cp.audit_seq_seq'::regclass);


--
-- Data for Name: audit; Type: TABLE DATA; Schema: tenantguard_cp; Owner: -
--

INSERT INTO tenantguard_cp.audit VALUES (1, '2026-12-07 02:32:03.573065+00', 'seed', 'seed', 1, '{"parent": null, "comment": "seed", "diff_sha256": "6ba96e22a69e57000cf5f055cf4e77eba60ba6036b8aaa10e616f1a32ecca0c1", "policy_sha256": "c36b5084069b0343be63e8b5f80fdccf6dab604340a3f608377fae57282ceb69"}', '\x0000000000000000000000000000000000000000000000000000000000000000', '\x3c65bc5e78801cad79abd70edf0c33ad9f088cbe5c861606251759d9329c2dec');
INSERT INTO tenantguard_cp.audit VALUES (2, '2026-12-07 02:32:03.575635+00', 'alice', 'put', 2, '{"parent": 1, "comment": "add globex", "diff_sha256": "580a47250cd4acb3cd636f5dc4ba3fc448679dfd0870d0d7e5e1bc9e87c41e9a", "policy_sha256": "58059504303ff8330a5da27389893c1655d0b989cdbe405997c674fd04998fe0"}', '\x3c65bc5e78801cad79abd70edf0c33ad9f088cbe5c861606251759d9329c2dec', '\x765ba7486d422a35ba4724700be5c6ce9ee801388d32935cbf59b007586f7c0e');
INSERT INTO tenantguard_cp.audit VALUES (3, '2026-12-07 02:32:03.577878+00', 'ops', 'suspend', 3, '{"parent": 2, "tenant": "globex", "comment": "suspend tenant globex", "diff_sha256": "d74cbdf7ea57119d50a33121e2fe7326ffb04828594ac443d5a7afcfc3459090", "policy_sha256": "0e73e5238c82105e14a93fbe9ab23a3d0082cc064ec44f9591e830d9d7174c4f"}', '\x765ba7486d422a35ba4724700be5c6ce9ee801388d32935cbf59b007586f7c0e', '\x79d235f33e3ecd2b66cc959d5c9fbde18d37283f2ab48917010d290d199f8fa2');
INSERT INTO tenantguard_cp.audit VALUES (4, '2026-12-07 02:32:03.579897+00', 'ops', 'resume', 4, '{"parent": 3, "tenant": "globex", "comment": "resume tenant globex", "diff_sha256": "4fee934737adedb2f3093f8ebf4508df9b3f8b73044ccb2f1b1877ba5a72a5d2", "policy_sha256": "860f36b8e1dc7ae88872fc4e9eae077f54e04ada6d5cc214b288d608af2599f9"}', '\x79d235f33e3ecd2b66cc959d5c9fbde18d37283f2ab48917010d290d199f8fa2', '\x92a35b4f1ee39c56c18e780b6e4a9badae39ff94124e8f328608d090aec07179');
INSERT INTO tenantguard_cp.audit VALUES (5, '2026-12-07 02:32:03.582122+00', 'bob', 'rollback', 5, '{"parent": 4, "comment": "rollback to version 1", "diff_sha256": "c783cbf7903a6aa059ea1d299d488caadb33e093ac354604efb52374b69122e0", "rollback_to": 1, "policy_sha256": "637c9c063eb56452b3afca7180adf29847cd47444181d8aaddcc9e81761007c6"}', '\x92a35b4f1ee39c56c18e780b6e4a9badae39ff94124e8f328608d090aec07179', '\x887c71788cf2948e1994bbee353a4e8828173b3a6ed92cc9d90c28ae1adf0cf9');


--
-- Data for Name: head; Type: TABLE DATA; Schema: tenantguard_cp; Owner: -
--

INSERT INTO tenantguard_cp.head VALUES (1, 5, 5, '\x887c71788cf2948e1994bbee353a4e8828173b3a6ed92cc9d90c28ae1adf0cf9');


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: tenantguard_cp; Owner: -
--

INSERT INTO tenantguard_cp.schema_migrations VALUES (1, '2026-12-07 02:32:03.544947+00');


--
-- Data for Name: versions; Type: TABLE DATA; Schema: tenantguard_cp; Owner: -
--

INSERT INTO tenantguard_cp.versions VALUES (1, '{"tables": [{"name": "public.orders", "tenant_column": "tenant_id"}], "tenants": [{"id": "acme", "credentials": ["SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="]}], "version": "1"}', 'seed', '2026-12-07 02:32:03.573065+00', 'seed', '--- empty
+++ version 1
@@ -0,0 +1,16 @@
+{
+  "tenants": [
+    {
+      "id": "acme",
+      "credentials": [
+        "SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="
+      ]
+    }
+  ],
+  "tables": [
+    {
+      "name": "public.orders",
+      "tenant_column": "tenant_id"
+    }
+  ]
+}
', NULL);
INSERT INTO tenantguard_cp.versions VALUES (2, '{"tables": [{"name": "public.orders", "tenant_column": "tenant_id"}], "tenants": [{"id": "acme", "credentials": ["SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="]}, {"id": "globex", "credentials": ["SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="]}], "version": "2"}', 'alice', '2026-12-07 02:32:03.575635+00', 'add globex', '--- version 1
+++ version 2
@@ -5,6 +5,12 @@
       "credentials": [
         "SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="
       ]
+    },
+    {
+      "id": "globex",
+      "credentials": [
+        "SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="
+      ]
     }
   ],
   "tables": [
', 1);
INSERT INTO tenantguard_cp.versions VALUES (3, '{"tables": [{"name": "public.orders", "tenant_column": "tenant_id"}], "tenants": [{"id": "acme", "credentials": ["SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="]}, {"id": "globex", "suspended": true, "credentials": ["SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="]}], "version": "3"}', 'ops', '2026-12-07 02:32:03.577878+00', 'suspend tenant globex', '--- version 2
+++ version 3
@@ -10,7 +10,8 @@
       "id": "globex",
       "credentials": [
         "SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="
-      ]
+      ],
+      "suspended": true
     }
   ],
   "tables": [
', 2);
INSERT INTO tenantguard_cp.versions VALUES (4, '{"tables": [{"name": "public.orders", "tenant_column": "tenant_id"}], "tenants": [{"id": "acme", "credentials": ["SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="]}, {"id": "globex", "credentials": ["SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="]}], "version": "4"}', 'ops', '2026-12-07 02:32:03.579897+00', 'resume tenant globex', '--- version 3
+++ version 4
@@ -10,8 +10,7 @@
       "id": "globex",
       "credentials": [
         "SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="
-      ],
-      "suspended": true
+      ]
     }
   ],
   "tables": [
', 3);
INSERT INTO tenantguard_cp.versions VALUES (5, '{"tables": [{"name": "public.orders", "tenant_column": "tenant_id"}], "tenants": [{"id": "acme", "credentials": ["SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="]}], "version": "5"}', 'bob', '2026-12-07 02:32:03.582122+00', 'rollback to version 1', '--- version 4
+++ version 5
@@ -5,12 +5,6 @@
       "credentials": [
         "SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="
       ]
-    },
-    {
-      "id": "globex",
-      "credentials": [
-        "SCRAM-SHA-256$4096:UO4LH0zHvU/AVxIqDcfHzA==$LkWUNd++n777GoYnIjiMF/oIL0OMiizjiWkWTHtsg7Y=:LMWHsCUw1TWAbqACHn8OnvbrCoUYX2gM6CF1bgyaJoQ="
-      ]
     }
   ],
   "tables": [
', 4);


--
-- Name: audit_seq_seq; Type: SEQUENCE SET; Schema: tenantguard_cp; Owner: -
--

SELECT pg_catalog.setval('tenantguard_cp.audit_seq_seq', 1, false);


--
-- Name: audit audit_pkey; Type: CONSTRAINT; Schema: tenantguard_cp; Owner: -
--

ALTER TABLE ONLY tenantguard_cp.audit
    ADD CONSTRAINT audit_pkey PRIMARY KEY (seq);


--
-- Name: head head_pkey; Type: CONSTRAINT; Schema: tenantguard_cp; Owner: -
--

ALTER TABLE ONLY tenantguard_cp.head
    ADD CONSTRAINT head_pkey PRIMARY KEY (id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: tenantguard_cp; Owner: -
--

ALTER TABLE ONLY tenantguard_cp.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: versions versions_pkey; Type: CONSTRAINT; Schema: tenantguard_cp; Owner: -
--

ALTER TABLE ONLY tenantguard_cp.versions
    ADD CONSTRAINT versions_pkey PRIMARY KEY (version);


--
-- Name: versions versions_parent_fkey; Type: FK CONSTRAINT; Schema: tenantguard_cp; Owner: -
--

ALTER TABLE ONLY tenantguard_cp.versions
    ADD CONSTRAINT versions_parent_fkey FOREIGN KEY (parent) REFERENCES tenantguard_cp.versions(version);


--
-- PostgreSQL database dump complete
--


