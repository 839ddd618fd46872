// PostgreSQL JDBC (Debian libpostgresql-jdbc-java) through the tenantguard
// sidecar. Prints a plan line, then one JSON line per case, as the other
// client scripts of test/compat do.

import java.io.StringReader;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public final class JdbcCases {
    static final String TAG = "compat-jdbc";

    /** A case returns a detail or throws. */
    interface Case {
        String run() throws Exception;
    }

    static final class Failed extends Exception {
        Failed(String message) {
            super(message);
        }
    }

    static void check(boolean cond, String message) throws Failed {
        if (!cond) {
            throw new Failed(message);
        }
    }

    /** Opens a connection from a postgres:// URL of the demo, with extra properties. */
    static Connection connect(String envKey, String... props) throws Exception {
        URI u = URI.create(System.getenv(envKey));
        String[] user = u.getRawUserInfo().split(":", 2);
        Properties p = new Properties();
        p.setProperty("user", URLDecoder.decode(user[0], StandardCharsets.UTF_8));
        p.setProperty("password", URLDecoder.decode(user[1], StandardCharsets.UTF_8));
        p.setProperty("sslmode", "disable");
        p.setProperty("connectTimeout", "10");
        p.setProperty("socketTimeout", "30");
        for (int i = 0; i + 1 < props.length; i += 2) {
            p.setProperty(props[i], props[i + 1]);
        }
        return DriverManager.getConnection("jdbc:postgresql://" + u.getHost() + ":" + u.getPort() + u.getPath(), p);
    }

    static Connection acme(String... props) throws Exception {
        return connect("TG_PG_URL_ACME", props);
    }

    static Connection globex() throws Exception {
        return connect("TG_PG_URL_GLOBEX");
    }

    /** The first row of a query, its columns as strings. */
    static List<String> row(Connection c, String sql, String... args) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                ps.setString(i + 1, args[i]);
            }
            try (ResultSet rs = ps.executeQuery()) {
                List<String> out = new ArrayList<>();
                if (rs.next()) {
                    for (int i = 1; i <= rs.getMetaData().getColumnCount(); i++) {
                        out.add(rs.getString(i));
                    }
                }
                return out;
            }
        }
    }

    static String connectRead() throws Exception {
        try (Connection c = acme(); Statement st = c.createStatement();
                ResultSet rs = st.executeQuery("SELECT tenant_id, item FROM public.orders ORDER BY id")) {
            List<String> items = new ArrayList<>();
            while (rs.next()) {
                check(rs.getString(1).equals("acme"), "acme reads a row of " + rs.getString(1));
                items.add(rs.getString(2));
            }
            check(items.contains("anvil") && items.contains("rocket skates"), "acme's rows: " + items);
            return items.size() + " rows, all acme's";
        }
    }

    static String parameterized() throws Exception {
        // Past prepareThreshold (5) pgJDBC switches to a named server-side statement.
        try (Connection c = acme();
                PreparedStatement ps = c.prepareStatement("SELECT amount::text FROM public.orders WHERE item = ?")) {
            for (int i = 0; i < 7; i++) {
                ps.setString(1, "anvil");
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next() && rs.getString(1).equals("120.00"), "anvil's amount, execution " + i);
                }
            }
            return "PreparedStatement executed 7 times (server-prepared from the 5th)";
        }
    }

    static String transaction() throws Exception {
        String insert = "INSERT INTO public.orders (tenant_id, item, amount) VALUES ('acme', ?, 1)";
        try (Connection c = acme()) {
            c.setAutoCommit(false);
            for (String item : new String[] {TAG + "-tx-rolled-back", TAG + "-tx-committed"}) {
                try (PreparedStatement ps = c.prepareStatement(insert)) {
                    ps.setString(1, item);
                    ps.executeUpdate();
                }
                if (item.endsWith("rolled-back")) {
                    c.rollback();
                } else {
                    c.commit();
                }
            }
            c.setAutoCommit(true);
            List<String> found = row(c, "SELECT count(*) FILTER (WHERE item = ?), count(*) FILTER (WHERE item = ?) FROM public.orders",
                    TAG + "-tx-rolled-back", TAG + "-tx-committed");
            row(c, "DELETE FROM public.orders WHERE item = ? RETURNING 1", TAG + "-tx-committed");
            check(found.equals(List.of("0", "1")), "rolled back / committed rows found: " + found);
            return "rollback discarded, commit kept";
        }
    }

    static String errorRecovery() throws Exception {
        List<String> codes = new ArrayList<>();
        try (Connection c = acme(); Statement st = c.createStatement()) {
            for (String sql : new String[] {"SELEC 1", "SELECT set_config('tenantguard.binding', 'globex', false)"}) {
                try {
                    st.execute(sql);
                    throw new Failed(sql + " succeeded");
                } catch (SQLException e) {
                    codes.add(e.getSQLState());
                }
                check(row(c, "SELECT 1").equals(List.of("1")), "session unusable after " + sql);
            }
        }
        check(codes.equals(List.of("42601", "42501")), "SQLSTATEs " + codes);
        return "42601 and 42501, the session still usable after each";
    }

    static String isolationRows() throws Exception {
        try (Connection c = acme()) {
            List<String> got = row(c, "SELECT count(*) FILTER (WHERE tenant_id <> 'acme'), count(*) FILTER (WHERE item = 'hammock') FROM public.orders");
            check(got.equals(List.of("0", "0")), "acme sees rows of others / hammocks: " + got);
            return "no row of globex visible";
        }
    }

    static String isolationUpdateDelete() throws Exception {
        try (Connection c = acme(); Statement st = c.createStatement()) {
            int updated = st.executeUpdate("UPDATE public.orders SET amount = 0 WHERE tenant_id = 'globex'");
            int deleted = st.executeUpdate("DELETE FROM public.orders WHERE item = 'doomsday device'");
            check(updated == 0 && deleted == 0, "UPDATE " + updated + ", DELETE " + deleted);
            try {
                st.executeUpdate("UPDATE public.orders SET tenant_id = 'globex' WHERE item = 'anvil'");
                throw new Failed("moving a row to globex succeeded");
            } catch (SQLException e) {
                check("42501".equals(e.getSQLState()), "moving a row to globex: " + e.getSQLState() + " " + e.getMessage());
            }
            return "UPDATE 0, DELETE 0, moving a row to globex refused (42501)";
        }
    }

    static String startupOptions() throws Exception {
        String show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')";
        try (Connection c = acme("options", "-c statement_timeout=750 -c lock_timeout=1500"); Statement st = c.createStatement()) {
            check(row(c, show).equals(List.of("750ms", "1500ms")), "settings " + row(c, show));
            long start = System.nanoTime();
            try {
                st.execute("SELECT pg_sleep(5)");
                throw new Failed("pg_sleep(5) was not canceled");
            } catch (SQLException e) {
                check("57014".equals(e.getSQLState()), "pg_sleep(5): " + e.getSQLState() + " " + e.getMessage());
            }
            long took = (System.nanoTime() - start) / 1_000_000;
            check(row(c, show).equals(List.of("750ms", "1500ms")), "settings after the timeout " + row(c, show));
            return "options statement_timeout 750ms, lock_timeout 1500ms; pg_sleep(5) canceled after " + took + "ms";
        }
    }

    static String startupCrossTenant() throws Exception {
        List<String> refused = new ArrayList<>();
        for (String opts : new String[] {"-c tenantguard.binding=globex", "-c row_security=off", "-c session_authorization=postgres"}) {
            try (Connection c = acme("options", opts)) {
                throw new Failed("startup with options " + opts + " was accepted");
            } catch (SQLException e) {
                check("42501".equals(e.getSQLState()), "options " + opts + ": " + e.getSQLState() + " " + e.getMessage());
                refused.add(opts);
            }
        }
        return "refused (42501): options " + String.join(", ", refused);
    }

    static String copyFrom() throws Exception {
        try (Connection c = acme()) {
            try {
                CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
                String rows = TAG + "-copy-1\t1\n" + TAG + "-copy-2\t2\n" + TAG + "-copy-3\t3\n";
                long copied = cm.copyIn("COPY public.orders (item, amount) FROM STDIN", new StringReader(rows));
                List<String> found = row(c, "SELECT count(*), string_agg(DISTINCT tenant_id, ',') FROM public.orders WHERE item LIKE ?", TAG + "-copy-%");
                check(copied == 3 && found.equals(List.of("3", "acme")), "COPY reported " + copied + " rows; found " + found);
                return "CopyManager.copyIn of 3 rows, tenant_id acme filled in";
            } finally {
                row(c, "DELETE FROM public.orders WHERE item LIKE ? RETURNING 1", TAG + "-copy-%");
            }
        }
    }

    static String copyCrossTenant() throws Exception {
        String refusal;
        try (Connection c = acme()) {
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            String rows = "acme\t" + TAG + "-cross-acme\t1\nglobex\t" + TAG + "-cross-globex\t2\n";
            try {
                cm.copyIn("COPY public.orders (tenant_id, item, amount) FROM STDIN", new StringReader(rows));
                throw new Failed("COPY with a row for globex was accepted");
            } catch (SQLException e) {
                refusal = e.getSQLState() + " " + e.getMessage();
            }
            List<String> seen = row(c, "SELECT count(*) FROM public.orders WHERE item LIKE ?", TAG + "-cross-%");
            check(seen.equals(List.of("0")), "acme sees rows of the refused COPY: " + seen);
        }
        try (Connection g = globex()) {
            List<String> seen = row(g, "SELECT count(*) FROM public.orders WHERE item LIKE ?", TAG + "-cross-%");
            check(seen.equals(List.of("0")), "globex sees rows of acme's COPY: " + seen);
        }
        return "refused: " + refusal;
    }

    /** Collects notifications until want have come or 5 seconds pass. */
    static List<String> notifications(Connection c, int want) throws Exception {
        List<String> got = new ArrayList<>();
        long deadline = System.nanoTime() + 5_000_000_000L;
        while (got.size() < want) {
            int left = (int) ((deadline - System.nanoTime()) / 1_000_000);
            check(left > 0, "notifications so far " + got);
            PGNotification[] ns = c.unwrap(PGConnection.class).getNotifications(left);
            if (ns != null) {
                for (PGNotification n : ns) {
                    got.add(n.getName() + ":" + n.getParameter());
                }
            }
        }
        return got;
    }

    static String listenNotify() throws Exception {
        try (Connection c = acme(); Statement st = c.createStatement()) {
            st.execute("LISTEN compat_jdbc");
            st.execute("NOTIFY compat_jdbc, 'a1'");
            st.execute("SELECT pg_notify('compat_jdbc', 'a2')");
            List<String> got = notifications(c, 2);
            check(got.equals(List.of("compat_jdbc:a1", "compat_jdbc:a2")), "notifications " + got);
            return "NOTIFY and pg_notify received on the channel as named";
        }
    }

    static String listenCrossTenant() throws Exception {
        try (Connection c = acme(); Statement st = c.createStatement()) {
            try {
                st.execute("LISTEN compat_jdbc_cross");
            } catch (SQLException e) {
                check("42501".equals(e.getSQLState()), "LISTEN: " + e.getSQLState() + " " + e.getMessage());
                return "LISTEN refused: " + e.getMessage();
            }
            try (Connection g = globex(); Statement gs = g.createStatement()) {
                gs.execute("NOTIFY compat_jdbc_cross, 'from globex'");
            } catch (SQLException e) {
                // refused for globex too: nothing to leak
            }
            // In commit order: globex's, had it leaked, comes before acme's own.
            st.execute("NOTIFY compat_jdbc_cross, 'from acme'");
            List<String> got = notifications(c, 1);
            check(got.get(0).equals("compat_jdbc_cross:from acme"), "acme got " + got + " first");
            return "acme got only its own notification";
        }
    }

    static String globexUnaffected() throws Exception {
        try (Connection g = globex()) {
            List<String> got = row(g, "SELECT (SELECT amount::text FROM public.orders WHERE item = 'hammock'),"
                    + " (SELECT amount::text FROM public.orders WHERE item = 'doomsday device'),"
                    + " (SELECT count(*) FROM public.orders WHERE tenant_id <> 'globex' OR item LIKE ?)", TAG + "%");
            check(got.equals(List.of("40.00", "999.99", "0")), "globex sees " + got);
            return "globex's rows intact; none of acme's visible";
        }
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (ch < 0x20) {
                        b.append(String.format("\\u%04x", (int) ch));
                    } else {
                        b.append(ch);
                    }
                }
            }
        }
        return b.append('"').toString();
    }

    public static void main(String[] args) {
        Map<String, Case> cases = new LinkedHashMap<>();
        cases.put("connect_read", JdbcCases::connectRead);
        cases.put("parameterized", JdbcCases::parameterized);
        cases.put("transaction", JdbcCases::transaction);
        cases.put("error_recovery", JdbcCases::errorRecovery);
        cases.put("isolation_rows", JdbcCases::isolationRows);
        cases.put("isolation_update_delete", JdbcCases::isolationUpdateDelete);
        cases.put("startup_options", JdbcCases::startupOptions);
        cases.put("startup_cross_tenant", JdbcCases::startupCrossTenant);
        cases.put("copy_from", JdbcCases::copyFrom);
        cases.put("copy_cross_tenant", JdbcCases::copyCrossTenant);
        cases.put("listen_notify", JdbcCases::listenNotify);
        cases.put("listen_cross_tenant", JdbcCases::listenCrossTenant);
        cases.put("globex_unaffected", JdbcCases::globexUnaffected);

        List<String> names = new ArrayList<>();
        for (String n : cases.keySet()) {
            names.add(json(n));
        }
        String version = org.postgresql.Driver.class.getPackage().getImplementationVersion();
        System.out.println("{\"client\": \"jdbc\", \"version\": " + json(String.valueOf(version))
                + ", \"cases\": [" + String.join(", ", names) + "]}");
        for (Map.Entry<String, Case> e : cases.entrySet()) {
            boolean ok;
            String detail;
            try {
                detail = e.getValue().run();
                ok = true;
            } catch (Exception ex) {
                detail = ex.getClass().getSimpleName() + ": " + ex.getMessage();
                ok = false;
            }
            System.out.println("{\"case\": " + json(e.getKey()) + ", \"ok\": " + ok + ", \"detail\": " + json(detail) + "}");
            System.out.flush();
        }
    }
}
